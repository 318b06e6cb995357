//! The one formatter of an error with its causes.

/// An error and its causes joined by `: `, each cause added only when the text so far does not
/// already say it (errors that quote their source, and reqwest's "error sending request" that
/// hides the real cause behind it, both read right).
///
/// ```
/// let io = std::io::Error::other("disk on fire");
/// let err = std::io::Error::new(std::io::ErrorKind::Other, io);
/// assert_eq!(skiff::error_chain(&err), "disk on fire");
/// ```
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("pulling x")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("writing layer: {0}")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn causes_are_joined_once() {
        let err = Outer(Inner(std::io::Error::from_raw_os_error(28)));
        assert_eq!(
            super::error_chain(&err),
            "pulling x: writing layer: No space left on device (os error 28)"
        );
    }
}
