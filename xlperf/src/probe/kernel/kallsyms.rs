//! Kernel symbol addresses from `/proc/kallsyms`.

use std::collections::{BTreeSet, HashMap};

use crate::probe::ProbeError;

const KALLSYMS: &str = "/proc/kallsyms";

/// Each of `names` → its text symbols' (address, module), module `None` for the kernel
/// image. A name with two entries is defined twice (static functions in two files).
pub type TextSymbols = HashMap<String, Vec<(u64, Option<String>)>>;

pub fn text_symbols(names: &BTreeSet<String>) -> Result<TextSymbols, ProbeError> {
    let text = std::fs::read_to_string(KALLSYMS).map_err(|source| ProbeError::Read {
        path: KALLSYMS.into(),
        source,
    })?;
    parse(&text, names)
}

fn parse(text: &str, names: &BTreeSet<String>) -> Result<TextSymbols, ProbeError> {
    let mut found: TextSymbols = HashMap::new();
    let mut any_address = false;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            continue;
        };
        any_address |= addr != 0;
        if !matches!(kind, "t" | "T") || !names.contains(name) {
            continue;
        }
        let module = fields
            .next()
            .map(|m| m.trim_start_matches('[').trim_end_matches(']').to_owned());
        found
            .entry(name.to_owned())
            .or_default()
            .push((addr, module));
    }
    if !any_address {
        return Err(ProbeError::KallsymsHidden);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_symbols_of_the_kernel_and_its_modules() {
        let text = "ffffffff816d8a50 T vfs_write\n\
                    ffffffff81000000 D vfs_write_data\n\
                    ffffffff81234560 t helper\n\
                    ffffffff81234990 t helper\n\
                    ffffffffc0a01230 t vgem_fence_signal\t[vgem]\n\
                    ffffffff82000000 d vgem_fence_signal\n";
        let names: BTreeSet<String> = ["vfs_write", "helper", "vgem_fence_signal", "absent"]
            .map(String::from)
            .into();
        let found = parse(text, &names).expect("addresses visible");
        assert_eq!(found["vfs_write"], vec![(0xffff_ffff_816d_8a50, None)]);
        assert_eq!(found["helper"].len(), 2, "a static name defined twice");
        assert_eq!(
            found["vgem_fence_signal"],
            vec![(0xffff_ffff_c0a0_1230, Some("vgem".to_owned()))]
        );
        assert!(!found.contains_key("absent"));
    }

    #[test]
    fn all_zero_addresses_mean_they_are_hidden() {
        let names: BTreeSet<String> = ["vfs_write".to_owned()].into();
        let err = parse("0000000000000000 T vfs_write\n", &names).expect_err("hidden");
        assert!(matches!(err, ProbeError::KallsymsHidden));
    }
}
