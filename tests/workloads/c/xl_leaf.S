/* The same work behind two prologues, and untraced twins of both.
 *
 * xl_leaf_stepped begins `mov; lea; loop`: no instruction the kernel emulates can be
 * reached, so its probe is single-stepped (~15 µs a call here, most of it inside the
 * call). xl_leaf_push begins `push %rbp`, which the kernel emulates. The *_twin copies
 * are never traced: the driver times them to know what a call really costs. */
    .text

    .globl xl_leaf_stepped
    .type xl_leaf_stepped,@function
xl_leaf_stepped:
    mov %edi, %ecx
    lea 1(%rdi), %rax
1:  lea (%rax,%rcx,2), %rax
    loop 1b
    ret
    .size xl_leaf_stepped, .-xl_leaf_stepped

    .globl xl_leaf_push
    .type xl_leaf_push,@function
xl_leaf_push:
    push %rbp
    mov %edi, %ecx
    lea 1(%rdi), %rax
1:  lea (%rax,%rcx,2), %rax
    loop 1b
    pop %rbp
    ret
    .size xl_leaf_push, .-xl_leaf_push

    .globl twin_leaf_stepped
    .type twin_leaf_stepped,@function
twin_leaf_stepped:
    mov %edi, %ecx
    lea 1(%rdi), %rax
1:  lea (%rax,%rcx,2), %rax
    loop 1b
    ret
    .size twin_leaf_stepped, .-twin_leaf_stepped

    .globl twin_leaf_push
    .type twin_leaf_push,@function
twin_leaf_push:
    push %rbp
    mov %edi, %ecx
    lea 1(%rdi), %rax
1:  lea (%rax,%rcx,2), %rax
    loop 1b
    pop %rbp
    ret
    .size twin_leaf_push, .-twin_leaf_push

    .section .note.GNU-stack,"",@progbits
