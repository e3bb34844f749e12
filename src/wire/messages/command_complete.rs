//! CommandComplete: the tag that ends a statement's answer.

/// The tag of a CommandComplete frame (`SELECT 5`), without its NUL.
pub(crate) fn command_tag(frame: &[u8]) -> &[u8] {
    frame
        .get(5..frame.len().saturating_sub(1))
        .unwrap_or_default()
}

/// The row count of a CommandComplete frame's tag (`SELECT 5`, `INSERT 0 2`).
pub(crate) fn tag_rows(frame: &[u8]) -> u64 {
    command_tag(frame)
        .rsplit(|&b| b == b' ')
        .next()
        .and_then(|n| std::str::from_utf8(n).ok()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_command_tags() {
        let frame = |tag: &str| crate::wire::reply::frame_of(b'C', format!("{tag}\0").as_bytes());
        assert_eq!(tag_rows(&frame("SELECT 5")), 5);
        assert_eq!(tag_rows(&frame("INSERT 0 2")), 2);
        assert_eq!(tag_rows(&frame("CREATE TABLE")), 0);
    }
}
