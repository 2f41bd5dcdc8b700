//! `${VAR}` expansion in config values, for what the Downward API puts in the environment.

/// Replaces `${VAR}` and `${VAR:-default}` in `text`; `$$` stands for a literal `$`. A variable
/// that is unset (or empty) with no default is an error naming it: a silently empty node name
/// would make every series from this node indistinguishable.
pub fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner
                .find('}')
                .ok_or_else(|| format!("`{text}`: `${{` without a closing `}}`"))?;
            let spec = &inner[..end];
            let (var, default) = match spec.split_once(":-") {
                Some((var, default)) => (var, Some(default)),
                None => (spec, None),
            };
            if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("`{text}`: `${{{spec}}}` is not a variable name"));
            }
            match (lookup(var).filter(|v| !v.is_empty()), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(format!(
                        "environment variable {var} is not set (write `${{{var}:-fallback}}` for a default)"
                    ));
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(var: &str) -> Option<String> {
        (var == "NODE_NAME").then(|| "node-a".to_owned())
    }

    #[test]
    fn expands_set_and_defaulted_variables() {
        assert_eq!(expand_env("${NODE_NAME}", env).unwrap(), "node-a");
        assert_eq!(expand_env("x-${POD_IP:-none}-y", env).unwrap(), "x-none-y");
        assert_eq!(expand_env("cost $$5 $x", env).unwrap(), "cost $5 $x");
    }

    #[test]
    fn unset_variable_is_named() {
        assert_eq!(
            expand_env("${POD_IP}", env).unwrap_err(),
            "environment variable POD_IP is not set (write `${POD_IP:-fallback}` for a default)"
        );
        assert!(
            expand_env("${NODE_NAME", env)
                .unwrap_err()
                .contains("without a closing")
        );
    }
}
