//! What the two HTML pages share (diagnose's report.html and the daemon's status page): the
//! escaping every string from the cluster goes through, and the colours a result is drawn in.
//! Node names, pod names, DNS names and messages come from the cluster or its users, so none is
//! written into a page unescaped.

use std::borrow::Cow;

/// `text` safe inside an HTML (or inline SVG) element and inside a quoted attribute value:
/// `& < > " '` become character references; anything else is kept as it is.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The page's Content-Security-Policy: nothing is fetched and no script runs, whatever a page
/// might hold; the pages need only their own inline style.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; \
                       base-uri 'none'; form-action 'none'";

/// A result that succeeded (a path up, a lookup answered as expected, a volume verified).
pub const UP: &str = "#2ca02c";
/// A result that failed and counts.
pub const DOWN: &str = "#d62728";
/// A failure too fresh to judge, or a target not probed yet.
pub const PENDING: &str = "#7f8fa6";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes_and_keeps_the_rest() {
        assert!(matches!(escape("node-a.example"), Cow::Borrowed(_)));
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(escape("nœud→ü"), "nœud→ü");
    }
}
