//! A small reader for the Prometheus / OpenMetrics text the kube-netprobe pods serve: samples
//! only (names, labels, values), enough for the live matrix. Parsing is separate from I/O so the
//! matrix analysis is tested on captured `/metrics` text.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map(String::as_str).unwrap_or("")
    }
}

/// Every sample line of `text`, under current names; lines that do not parse are skipped (a
/// partial scrape still says something).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(parse_line)
        .map(current_name)
        .collect()
}

/// Names that daemons before the naming scheme (every "did the last probe succeed" gauge ends
/// in `_probe_success`) served: a cluster halfway through an upgrade still reads as one matrix.
const RENAMED: [(&str, &str); 2] = [
    ("netprobe_peer_up", "netprobe_peer_probe_success"),
    ("netprobe_apiserver_up", "netprobe_apiserver_probe_success"),
];

/// A sample under its current name.
fn current_name(mut sample: Sample) -> Sample {
    if let Some((_, new)) = RENAMED.iter().find(|(old, _)| *old == sample.name) {
        sample.name = (*new).to_owned();
    }
    sample
}

/// One sample line (`name{label="value",...} value [timestamp]`); `None` when it is not one.
/// Names are as served ([`parse`] reads old names as the current ones). The integration tests
/// parse the daemon's `/metrics` with it too, and fail on a `None`.
pub fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let end;
        loop {
            // key
            while chars.peek().is_some_and(|(_, c)| *c == ',' || *c == ' ') {
                chars.next();
            }
            let (start, c) = *chars.peek()?;
            if c == '}' {
                end = start + 1;
                break;
            }
            let eq = body[start..].find('=')? + start;
            let key = body[start..eq].trim().to_owned();
            while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                chars.next();
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                let (_, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break,
                    other => value.push(other),
                }
            }
            labels.insert(key, value);
        }
        rest = &body[end..];
    }
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// A sample value (or an `le` label's bound): a float, `+Inf`, `Inf`, `-Inf` or `NaN`.
pub fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        v => v.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_old_names_of_an_older_daemon_as_the_new_ones() {
        let old = parse(
            "netprobe_peer_up{target_node=\"node-b\",protocol=\"http\",family=\"ipv4\"} 0\n\
             netprobe_apiserver_up{path=\"direct\"} 1\n\
             netprobe_peer_upgrades 3\n",
        );
        let names: Vec<(&str, f64)> = old.iter().map(|s| (s.name.as_str(), s.value)).collect();
        assert_eq!(
            names,
            [
                ("netprobe_peer_probe_success", 0.0),
                ("netprobe_apiserver_probe_success", 1.0),
                ("netprobe_peer_upgrades", 3.0),
            ]
        );
        assert_eq!(old[0].label("target_node"), "node-b");
    }

    #[test]
    fn parses_samples_with_labels_escapes_and_timestamps() {
        let text = "# HELP x y\n# TYPE netprobe_peer_probe_success gauge\n\
            netprobe_peer_probe_success{target_node=\"node-b\",protocol=\"http\",family=\"ipv4\"} 1\n\
            netprobe_build_info{version=\"0.1\",revision=\"a\\\"b\"} 1 1700000000\n\
            netprobe_peer_targets 2\n\
            garbage{\n# EOF\n";
        let samples = parse(text);
        assert_eq!(samples.len(), 3, "{samples:?}");
        assert_eq!(samples[0].label("target_node"), "node-b");
        assert_eq!(samples[0].value, 1.0);
        assert_eq!(samples[1].label("revision"), "a\"b");
        assert_eq!(samples[2].name, "netprobe_peer_targets");
        assert_eq!(samples[2].value, 2.0);
    }
}
