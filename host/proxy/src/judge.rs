//! Proxy judges: URLs that answer with the address their caller came from.
//! Asking one through a proxy tells that proxy's exit IP. Judges are tried
//! in order; one that cannot be reached, answers an error or something that
//! is not an address is skipped for the next (a warning names it).

use std::net::IpAddr;

use crate::ProxyError;

/// Reads an address from a judge's answer: the body itself (`203.0.113.7`),
/// or JSON with `ip`, `origin` (httpbin; its first address) or `address`.
pub fn parse_answer(body: &str) -> Option<IpAddr> {
    let text = body.trim();
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    ["ip", "origin", "address"]
        .iter()
        .filter_map(|k| v.get(k).and_then(|x| x.as_str()))
        .find_map(|s| s.split(',').next().and_then(|a| a.trim().parse().ok()))
}

/// The exit IP of the proxy `client` goes through, from the first judge of
/// `judges` that answers with an address, and which judge that was.
pub async fn exit_ip(
    client: &reqwest::Client,
    judges: &[String],
    proxy_shown: &str,
) -> Result<(IpAddr, usize), ProxyError> {
    let mut problems = Vec::new();
    for (i, judge) in judges.iter().enumerate() {
        let answer = async {
            let resp = client.get(judge).send().await.map_err(|e| dc_net::error_chain(&e))?;
            let status = resp.status();
            if !status.is_success() {
                return Err(format!("answered {status}"));
            }
            let body = resp.text().await.map_err(|e| dc_net::error_chain(&e))?;
            parse_answer(&body)
                .ok_or_else(|| format!("answered no address: {:?}", body.chars().take(80).collect::<String>()))
        }
        .await;
        match answer {
            Ok(ip) => return Ok((ip, i)),
            Err(why) => {
                tracing::warn!(proxy = proxy_shown, judge = %judge, problem = %why, "proxy judge failed; trying the next one");
                problems.push(format!("{judge}: {why}"));
            }
        }
    }
    Err(ProxyError::Judge(format!(
        "no proxy judge told the exit IP of {proxy_shown} ({}); the proxy is not used",
        problems.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_in_the_usual_shapes_parse() {
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        assert_eq!(parse_answer("203.0.113.7\n"), ip("203.0.113.7"));
        assert_eq!(parse_answer(r#"{"ip": "2001:db8::1"}"#), ip("2001:db8::1"));
        assert_eq!(parse_answer(r#"{"origin": "198.51.100.2, 10.0.0.1"}"#), ip("198.51.100.2"));
        assert_eq!(parse_answer("<html>blocked</html>"), None);
        assert_eq!(parse_answer(r#"{"ip": "nope"}"#), None);
    }
}
