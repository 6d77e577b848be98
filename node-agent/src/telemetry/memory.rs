//! This process's resident memory, from `/proc/self/status` (Linux): what
//! the aggregator records with each round so its footprint is measured by
//! the run itself, not estimated.

/// Peak resident set size so far (`VmHWM`), in bytes; `None` where the
/// kernel does not provide it.
pub fn peak_rss_bytes() -> Option<u64> {
    status_kib("VmHWM:").map(|kib| kib * 1024)
}

/// Current resident set size (`VmRSS`), in bytes.
pub fn rss_bytes() -> Option<u64> {
    status_kib("VmRSS:").map(|kib| kib * 1024)
}

/// Makes the C allocator hand every block of 1 MiB or more straight back to
/// the kernel when it is freed. glibc otherwise raises its mmap threshold
/// to the largest block freed so far (up to 32 MiB) and keeps freed blocks
/// below it for reuse: measured on the aggregator with a 40 MB model, about
/// 90 MB of freed tensors and buffers stayed resident after each round,
/// which is what set its peak. Setting the threshold explicitly turns the
/// adjustment off (mallopt(3)); libtorch allocates through the same malloc.
pub fn return_large_frees_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const ONE_MIB: libc::c_int = 1 << 20;
        // SAFETY: mallopt only sets an allocator parameter; it is called
        // before the aggregator allocates model-sized buffers, and glibc
        // serialises it against concurrent allocation.
        let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, ONE_MIB) };
        if ok != 1 {
            tracing::warn!(
                "mallopt(M_MMAP_THRESHOLD) was refused; freed buffers may stay resident"
            );
        }
    }
}

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_kib(&status, field)
}

fn parse_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_fields_and_tolerates_their_absence() {
        let status = "Name:\tmodelpub\nVmHWM:\t  123456 kB\nVmRSS:\t   1000 kB\n";
        assert_eq!(parse_kib(status, "VmHWM:"), Some(123456));
        assert_eq!(parse_kib(status, "VmRSS:"), Some(1000));
        assert_eq!(parse_kib(status, "VmSwap:"), None);
        if cfg!(target_os = "linux") {
            let (peak, now) = (peak_rss_bytes().unwrap(), rss_bytes().unwrap());
            assert!(peak >= now && now > 0, "{peak} {now}");
        }
    }
}
