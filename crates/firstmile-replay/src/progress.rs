//! Where a replay keeps its progress: in Kafka, as the committed offsets of
//! its own consumer group `firstmile-replay-<source>` (never a live stage's
//! group). They are committed in the same transaction as the batch's output,
//! so a replay stopped at any point resumes exactly after what it wrote.
//! Each offset's metadata holds the end fixed when the replay started, so
//! `--resume` stops where the original run would have.

const PREFIX: &str = "firstmile-replay end=";

/// The replay's consumer group and transactional id for a source. One
/// transactional id per source: a second replay of the same source fences
/// the first.
pub fn group(source: &str) -> String {
    format!("firstmile-replay-{source}")
}

/// The offset metadata that records a range's end.
pub fn metadata(end: i64) -> String {
    format!("{PREFIX}{end}")
}

/// The end recorded by [`metadata`]; `None` for offsets committed otherwise.
pub fn end_of(metadata: &str) -> Option<i64> {
    metadata.strip_prefix(PREFIX)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_survives_the_metadata_round_trip() {
        assert_eq!(end_of(&metadata(12_345)), Some(12_345));
        assert_eq!(end_of(""), None);
        assert_eq!(end_of("something else"), None);
        assert_eq!(end_of("firstmile-replay end=x"), None);
    }
}
