//! Bounds on what a message may carry. Senders truncate to these; the host
//! also enforces the frame limit, so a hostile guest cannot exceed them by much.

/// Longest free text (kernel log line, command detail) in bytes.
pub const MAX_TEXT: usize = 256;
/// Longest crash record excerpt in bytes.
pub const MAX_CRASH_TEXT: usize = 4096;
/// Most kernel events in one snapshot.
pub const MAX_KERNEL_EVENTS: usize = 32;
/// Most filesystems in one snapshot.
pub const MAX_FILESYSTEMS: usize = 64;
/// Most watched services.
pub const MAX_WATCHED: usize = 128;
/// Most collector failures listed in one snapshot.
pub const MAX_FAILURES: usize = 16;

/// Truncate `s` to at most `max` bytes on a UTF-8 boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::truncate_utf8;

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_utf8("héllo", 2), "h");
        assert_eq!(truncate_utf8("héllo", 3), "hé");
        assert_eq!(truncate_utf8("abc", 10), "abc");
        assert_eq!(truncate_utf8("", 0), "");
    }
}
