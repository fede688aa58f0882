//! Facts about the host and this process: peak resident memory, CPU model, hostname.
//!
//! The parsers take text so they can be tested without the files.

use lem_common::domain::Measured;

const PROC_STATUS: &str = "/proc/self/status";
const PROC_CPUINFO: &str = "/proc/cpuinfo";

/// Peak resident set size of this process (`VmHWM`), in bytes. Covers host memory only:
/// model weights held on a GPU are not in it.
pub fn peak_rss_bytes() -> Measured<u64> {
    if !cfg!(target_os = "linux") {
        return Measured::unavailable("peak RSS is read from /proc/self/status (Linux only)");
    }
    match std::fs::read_to_string(PROC_STATUS) {
        Ok(text) => match parse_vm_hwm_bytes(&text) {
            Some(bytes) => Measured::known(bytes, "VmHWM (/proc/self/status)"),
            None => Measured::unavailable(format!("no VmHWM line in {PROC_STATUS}")),
        },
        Err(e) => Measured::unavailable(format!("cannot read {PROC_STATUS}: {e}")),
    }
}

/// `VmHWM:   123456 kB` → bytes. The kernel always reports it in kB (KiB).
pub fn parse_vm_hwm_bytes(proc_status: &str) -> Option<u64> {
    let line = proc_status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    let mut parts = line.split_whitespace();
    let kib: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => kib.checked_mul(1024),
        _ => None,
    }
}

/// The CPU model as the kernel names it, e.g. "AMD EPYC 7B13"; `None` where
/// /proc/cpuinfo has no `model name` (non-Linux, many ARM kernels).
pub fn cpu_model_name() -> Option<String> {
    std::fs::read_to_string(PROC_CPUINFO)
        .ok()
        .and_then(|text| parse_cpu_model_name(&text))
}

/// First non-empty `model name` value in /proc/cpuinfo text.
pub fn parse_cpu_model_name(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        let value = value.trim();
        (key.trim() == "model name" && !value.is_empty()).then(|| value.to_owned())
    })
}

/// This host's name; "unknown" if the system will not say.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for buf.len() bytes; gethostname writes at most that.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        // POSIX leaves truncated names unterminated: take up to the first NUL or the end.
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        let name = String::from_utf8_lossy(&buf[..end]).trim().to_owned();
        if !name.is_empty() {
            return name;
        }
    }
    "unknown".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tlem-agent\nUmask:\t0022\nState:\tR (running)\n\
        VmPeak:\t  912340 kB\nVmSize:\t  900000 kB\nVmHWM:\t  204812 kB\n\
        VmRSS:\t  198000 kB\nThreads:\t3\n";

    #[test]
    fn vm_hwm_from_status_text() {
        assert_eq!(parse_vm_hwm_bytes(STATUS), Some(204_812 * 1024));
        assert_eq!(parse_vm_hwm_bytes("VmRSS:\t 10 kB\n"), None);
        assert_eq!(parse_vm_hwm_bytes("VmHWM:\t abc kB\n"), None);
        assert_eq!(parse_vm_hwm_bytes("VmHWM:\t 12 MB\n"), None);
        assert_eq!(parse_vm_hwm_bytes(""), None);
    }

    #[test]
    fn peak_rss_of_this_process() {
        let m = peak_rss_bytes();
        if cfg!(target_os = "linux") {
            // A test binary's peak RSS is at least a megabyte and well under a terabyte.
            let bytes = m.value.expect("VmHWM on Linux");
            assert!((1 << 20..1 << 40).contains(&bytes), "{bytes}");
            assert_eq!(m.source.as_deref(), Some("VmHWM (/proc/self/status)"));
        } else {
            assert_eq!(m.value, None);
            assert!(m.unavailable_reason.is_some());
        }
    }

    #[test]
    fn cpu_model_from_cpuinfo_text() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n\
            model\t\t: 1\nmodel name\t: AMD EPYC 7B13 64-Core Processor\nstepping\t: 1\n\n\
            processor\t: 1\nmodel name\t: AMD EPYC 7B13 64-Core Processor\n";
        assert_eq!(
            parse_cpu_model_name(text).as_deref(),
            Some("AMD EPYC 7B13 64-Core Processor")
        );
        // `model` alone is not the model name; empty values are skipped.
        assert_eq!(parse_cpu_model_name("model\t\t: 1\nmodel name\t:\n"), None);
        // ARM kernels without a model name line.
        assert_eq!(
            parse_cpu_model_name("processor\t: 0\nBogoMIPS\t: 50.00\nCPU part\t: 0xd0c\n"),
            None
        );
    }

    #[test]
    fn hostname_is_not_empty() {
        let h = hostname();
        assert!(!h.is_empty());
        assert!(!h.contains('\0'));
        if let Ok(kernel) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            assert_eq!(h, kernel.trim());
        }
    }
}
