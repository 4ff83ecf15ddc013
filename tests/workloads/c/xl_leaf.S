/* The same work behind two prologues, and untraced twins of both.
 *
 * A "stepped" leaf begins `mov; lea; loop`: no instruction the kernel emulates can be
 * reached, so its probe is single-stepped (several µs a call here, most of it inside the
 * call). A "push" leaf begins `push %rbp`, which the kernel emulates. The twin_* copies
 * are never traced: the driver times them to know what a call really costs. Each body
 * runs its loop edi times. */
    .text

.macro leaf_stepped name
    .globl \name
    .type \name,@function
\name:
    mov %edi, %ecx
    lea 1(%rdi), %rax
1:  lea (%rax,%rcx,2), %rax
    loop 1b
    ret
    .size \name, .-\name
.endm

.macro leaf_push name
    .globl \name
    .type \name,@function
\name:
    push %rbp
    mov %edi, %ecx
    lea 1(%rdi), %rax
1:  lea (%rax,%rcx,2), %rax
    loop 1b
    pop %rbp
    ret
    .size \name, .-\name
.endm

    leaf_stepped xl_leaf_stepped
    leaf_push xl_leaf_push
    leaf_stepped twin_leaf_stepped
    leaf_push twin_leaf_push

    .section .note.GNU-stack,"",@progbits
