//! Ban detection and the health score of a proxy.
//!
//! A response through a proxy is a **ban** when its status is one of
//! `proxy.ban_statuses` (403 and 429 by default) or its body is a CAPTCHA or
//! bot-challenge page; a request that never got an answer (the proxy refused
//! the connection, timed out, reset it) is a **failure**. Other answers, a
//! 404 or a 500 included, are the site's own and count as good.
//!
//! The score starts at 1.0: a ban halves it, a failure takes 30 % off, a
//! good answer wins back 20 % of the way to 1.0. A proxy whose score falls
//! below `proxy.retire_below` (0.2) is retired: three bans in a row, or five
//! failures.

/// What one request through a proxy came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An answer from the site.
    Good,
    /// Banned: a ban status, or a CAPTCHA / challenge page.
    Ban,
    /// No answer: connection refused, reset or timed out.
    Failure,
}

/// Markers of CAPTCHA and bot-challenge pages, matched case-insensitively
/// in the first 64 KiB of a body.
pub const CHALLENGE_MARKERS: &[&str] = &[
    "g-recaptcha",
    "h-captcha",
    "hcaptcha.com/1/api.js",
    "recaptcha/api.js",
    "cf-challenge",
    "cf_chl_",
    "/cdn-cgi/challenge-platform",
    "captcha-delivery.com",
    "px-captcha",
    "our systems have detected unusual traffic",
];

/// Judges one answer: a ban status or a challenge page is a ban.
pub fn judge_response(status: u16, body: &[u8], ban_statuses: &[u16]) -> Verdict {
    if ban_statuses.contains(&status) {
        return Verdict::Ban;
    }
    let head = &body[..body.len().min(64 * 1024)];
    if challenge_markers().is_match(head) { Verdict::Ban } else { Verdict::Good }
}

/// [`CHALLENGE_MARKERS`] as one automaton: every body is read once, without
/// a lower-cased copy (the proxied page's extra cost in the worker).
fn challenge_markers() -> &'static aho_corasick::AhoCorasick {
    static MARKERS: std::sync::OnceLock<aho_corasick::AhoCorasick> = std::sync::OnceLock::new();
    MARKERS.get_or_init(|| {
        aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(CHALLENGE_MARKERS)
            .expect("the challenge markers are a few short literals")
    })
}

/// A proxy's health score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Health {
    /// 0.0 to 1.0.
    pub score: f64,
}

impl Default for Health {
    fn default() -> Self {
        Health { score: 1.0 }
    }
}

impl Health {
    /// The score after one more verdict.
    pub fn note(&mut self, v: Verdict) -> f64 {
        self.score = match v {
            Verdict::Good => self.score + (1.0 - self.score) * 0.2,
            Verdict::Ban => self.score * 0.5,
            Verdict::Failure => self.score * 0.7,
        };
        self.score
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_are_statuses_and_challenge_pages() {
        let bans = [403, 429];
        assert_eq!(judge_response(403, b"", &bans), Verdict::Ban);
        assert_eq!(judge_response(429, b"slow down", &bans), Verdict::Ban);
        assert_eq!(judge_response(404, b"not here", &bans), Verdict::Good);
        assert_eq!(judge_response(500, b"oops", &bans), Verdict::Good);
        let captcha = br#"<html><div class="g-recaptcha" data-sitekey="x"></div></html>"#;
        assert_eq!(judge_response(200, captcha, &bans), Verdict::Ban);
        assert_eq!(judge_response(200, b"<script src=/cdn-cgi/challenge-platform/h/b>", &bans), Verdict::Ban);
        assert_eq!(judge_response(200, b"<p>we talk about captchas here</p>", &bans), Verdict::Good);
        assert_eq!(judge_response(503, b"", &[503]), Verdict::Ban, "configured statuses count");
        // any case, inside bytes that are not UTF-8, only in the first 64 KiB
        assert_eq!(judge_response(200, b"<DIV CLASS=\"G-reCAPTCHA\">", &bans), Verdict::Ban);
        assert_eq!(judge_response(200, b"\xff\xfeOur systems have detected unusual traffic\xc3", &bans), Verdict::Ban);
        let mut late = vec![b' '; 64 * 1024];
        late.extend_from_slice(b"g-recaptcha");
        assert_eq!(judge_response(200, &late, &bans), Verdict::Good);
    }

    #[test]
    fn three_bans_or_five_failures_go_below_the_default_threshold() {
        let mut h = Health::default();
        assert!(h.note(Verdict::Ban) >= 0.2 && h.note(Verdict::Ban) >= 0.2);
        assert!(h.note(Verdict::Ban) < 0.2);
        let mut h = Health::default();
        for _ in 0..4 {
            assert!(h.note(Verdict::Failure) >= 0.2);
        }
        assert!(h.note(Verdict::Failure) < 0.2);
        // good answers between bans keep a proxy that is only sometimes refused
        let mut h = Health::default();
        for _ in 0..20 {
            h.note(Verdict::Ban);
            for _ in 0..4 {
                h.note(Verdict::Good);
            }
        }
        assert!(h.score >= 0.2, "{}", h.score);
    }
}
