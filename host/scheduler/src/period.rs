//! The period of an interval schedule (`--every 30s | 5m | 1h | 2h30m | 1d`):
//! a whole number of seconds, at least 1s and at most 366 days.

use std::fmt;
use std::time::Duration;

/// The longest period accepted (366 days); rarer runs are a cron expression.
pub const MAX_PERIOD_SECS: u64 = 366 * 86_400;

const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];

/// A validated interval length: whole seconds, `1..=`[`MAX_PERIOD_SECS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period(u64);

/// Why an interval was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    /// Nothing given.
    #[error("interval is empty: write a duration such as 30s, 5m, 1h, 2h30m or 1d")]
    Empty,
    /// Not of the form `<number><unit>...`.
    #[error("interval \"{input}\": {problem}")]
    Invalid {
        /// The text as given.
        input: String,
        /// What is wrong and what to write.
        problem: String,
    },
    /// Adds up to zero.
    #[error("interval \"{0}\" is zero: it must be at least 1s")]
    Zero(String),
    /// Longer than [`MAX_PERIOD_SECS`].
    #[error("interval \"{0}\" is longer than 366d: use a cron expression for rarer runs")]
    TooLong(String),
}

impl Period {
    /// A period of `secs` seconds (as stored in `apps.interval_secs`).
    pub fn from_secs(secs: u64) -> Result<Period, PeriodError> {
        match secs {
            0 => Err(PeriodError::Zero(format!("{secs}s"))),
            s if s > MAX_PERIOD_SECS => Err(PeriodError::TooLong(format!("{secs}s"))),
            s => Ok(Period(s)),
        }
    }

    /// Parses `30s`, `5m`, `1h`, `2h30m`, `1d12h`: numbers each followed by a
    /// unit (`d`, `h`, `m`, `s`), largest unit first, each unit at most once.
    pub fn parse(input: &str) -> Result<Period, PeriodError> {
        let text = input.trim();
        if text.is_empty() {
            return Err(PeriodError::Empty);
        }
        let invalid = |problem: String| PeriodError::Invalid { input: input.to_string(), problem };
        let mut total: u64 = 0;
        let mut number = String::new();
        let mut last_unit: Option<usize> = None;
        for c in text.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let Some(rank) = UNITS.iter().position(|(u, _)| *u == c.to_ascii_lowercase()) else {
                return Err(invalid(format!("unexpected '{c}': write numbers with units d, h, m, s (like 2h30m)")));
            };
            if number.is_empty() {
                return Err(invalid(format!("'{c}' has no number before it (like 30{c})")));
            }
            if last_unit.is_some_and(|last| rank <= last) {
                return Err(invalid("write each unit once, largest first (d, h, m, s), like 1h30m".into()));
            }
            let n: u64 = number.parse().map_err(|_| PeriodError::TooLong(input.to_string()))?;
            total = n
                .checked_mul(UNITS[rank].1)
                .and_then(|secs| total.checked_add(secs))
                .ok_or_else(|| PeriodError::TooLong(input.to_string()))?;
            number.clear();
            last_unit = Some(rank);
        }
        if !number.is_empty() {
            return Err(invalid(format!(
                "\"{number}\" has no unit: write {number}s, {number}m, {number}h or {number}d"
            )));
        }
        match total {
            0 => Err(PeriodError::Zero(input.to_string())),
            s if s > MAX_PERIOD_SECS => Err(PeriodError::TooLong(input.to_string())),
            s => Ok(Period(s)),
        }
    }

    /// The length in seconds.
    pub fn as_secs(self) -> u64 {
        self.0
    }

    /// The length as a [`Duration`].
    pub fn as_duration(self) -> Duration {
        Duration::from_secs(self.0)
    }

    /// The length as a chrono [`chrono::TimeDelta`].
    pub fn as_time_delta(self) -> chrono::TimeDelta {
        // at most 366 days: always in range
        chrono::TimeDelta::seconds(self.0 as i64)
    }
}

impl fmt::Display for Period {
    /// The canonical form: `90` seconds prints as `1m30s`, a day as `1d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        for (unit, secs) in UNITS {
            if rest >= secs {
                write!(f, "{}{unit}", rest / secs)?;
                rest %= secs;
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for Period {
    type Err = PeriodError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Period::parse(s)
    }
}

impl TryFrom<Duration> for Period {
    type Error = PeriodError;

    /// Whole seconds only; a sub-second part is refused.
    fn try_from(d: Duration) -> Result<Self, Self::Error> {
        if d.subsec_nanos() != 0 {
            return Err(PeriodError::Invalid {
                input: format!("{d:?}"),
                problem: "intervals are whole seconds".into(),
            });
        }
        Period::from_secs(d.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> u64 {
        Period::parse(s).expect("parses").as_secs()
    }

    fn error(s: &str) -> String {
        Period::parse(s).expect_err("refused").to_string()
    }

    #[test]
    fn operator_durations_parse() {
        assert_eq!(secs("30s"), 30);
        assert_eq!(secs("5m"), 300);
        assert_eq!(secs("1h"), 3_600);
        assert_eq!(secs("2h30m"), 9_000);
        assert_eq!(secs("1d"), 86_400);
        assert_eq!(secs(" 1d12h5m7s "), 86_400 + 12 * 3_600 + 5 * 60 + 7);
        assert_eq!(secs("90s"), 90);
        assert_eq!(secs("2H"), 7_200);
        assert_eq!(secs("366d"), MAX_PERIOD_SECS);
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        for (input, shown) in [("90s", "1m30s"), ("2h30m", "2h30m"), ("1d", "1d"), ("25h", "1d1h"), ("3600s", "1h")] {
            let p = Period::parse(input).expect("parses");
            assert_eq!(p.to_string(), shown);
            assert_eq!(Period::parse(shown), Ok(p));
        }
    }

    #[test]
    fn zero_and_garbage_are_refused_with_clear_messages() {
        assert_eq!(error("0s"), "interval \"0s\" is zero: it must be at least 1s");
        assert_eq!(error("0h0m"), "interval \"0h0m\" is zero: it must be at least 1s");
        assert_eq!(error(""), "interval is empty: write a duration such as 30s, 5m, 1h, 2h30m or 1d");
        assert_eq!(error("30"), "interval \"30\": \"30\" has no unit: write 30s, 30m, 30h or 30d");
        assert_eq!(error("5x"), "interval \"5x\": unexpected 'x': write numbers with units d, h, m, s (like 2h30m)");
        assert_eq!(error("h"), "interval \"h\": 'h' has no number before it (like 30h)");
        assert_eq!(error("30m2h"), "interval \"30m2h\": write each unit once, largest first (d, h, m, s), like 1h30m");
        assert_eq!(
            error("1h 30m"),
            "interval \"1h 30m\": unexpected ' ': write numbers with units d, h, m, s (like 2h30m)"
        );
        assert_eq!(error("-5m"), "interval \"-5m\": unexpected '-': write numbers with units d, h, m, s (like 2h30m)");
        assert_eq!(error("367d"), "interval \"367d\" is longer than 366d: use a cron expression for rarer runs");
        assert!(matches!(Period::parse("99999999999999999999999s"), Err(PeriodError::TooLong(_))));
        assert_eq!(Period::from_secs(0), Err(PeriodError::Zero("0s".into())));
        assert!(Period::try_from(Duration::from_millis(1500)).is_err());
        assert_eq!(Period::try_from(Duration::from_secs(60)).map(|p| p.to_string()), Ok("1m".into()));
    }
}
