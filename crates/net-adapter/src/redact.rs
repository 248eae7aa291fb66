//! [`redact_url`]: the one way every backend hides the secrets of a URL before it appears in
//! a message, a log line or a `Debug` output.

/// `url` with the password of its user info and the values of `password=` / `pass=` query
/// parameters replaced by `***`.
///
/// User info is everything before the last `@` of the authority (the part before the first
/// `/` after the scheme): `user:password` keeps the user and hides the password, and user
/// info without a `:` (a token, or a password alone) is hidden whole. Text without a scheme
/// is read as an authority, so `user:secret@host` is redacted too; text without user info or
/// password parameters comes back unchanged.
pub fn redact_url(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let mut out = String::with_capacity(url.len());
    let rest = match head.split_once("://") {
        Some((scheme, rest)) => {
            out.push_str(scheme);
            out.push_str("://");
            rest
        }
        None => head,
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            match user_info.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None if !user_info.is_empty() => out.push_str("***"),
                None => {}
            }
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    out.push_str(path);
    if let Some(query) = query {
        out.push('?');
        for (index, pair) in query.split('&').enumerate() {
            if index > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((key, _))
                    if key.eq_ignore_ascii_case("password") || key.eq_ignore_ascii_case("pass") =>
                {
                    out.push_str(key);
                    out.push_str("=***");
                }
                _ => out.push_str(pair),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    fn check(url: &str, expected: &str) {
        assert_eq!(redact_url(url), expected, "{url}");
    }

    #[test]
    fn passwords_and_tokens_are_hidden() {
        check("redis://127.0.0.1:6379", "redis://127.0.0.1:6379");
        check("redis://127.0.0.1:6379/2", "redis://127.0.0.1:6379/2");
        check(
            "redis://alice:s3cret@host:6379/0",
            "redis://alice:***@host:6379/0",
        );
        check("redis://:s3cret@host", "redis://:***@host");
        check("rediss://s3cret@host", "rediss://***@host");
        check("redis://a:p@ss@host/1", "redis://a:***@host/1");
        check(
            "redis+unix:///tmp/r.sock?db=1&password=s3cret",
            "redis+unix:///tmp/r.sock?db=1&password=***",
        );
        check("redis://host/?pass=x&db=2", "redis://host/?pass=***&db=2");
        check("nats://u:secret@host:4222", "nats://u:***@host:4222");
        check("nats://host:4222", "nats://host:4222");
        check("u:secret@host", "u:***@host");
        check("nats://token@host/path@x", "nats://***@host/path@x");
        check("nats://a@b:c@host", "nats://a@b:***@host");
        check("tls://host:4222?PASSWORD=x", "tls://host:4222?PASSWORD=***");
        check("not a url", "not a url");
        check("", "");
    }
}
