//! Cron expressions with crontab(5) semantics: parsing into bit sets and
//! finding the next matching *wall-clock* time. Time zones and DST are not
//! handled here but in [`crate::zone`], which turns wall-clock times into instants.
//!
//! # Syntax
//!
//! Five fields `minute hour day-of-month month day-of-week`, or six with a
//! leading `second` field. Each field is a comma-separated list of `*`, a
//! value, a range `a-b`, or `*`/a range with a step (`*/15`, `1-30/5`).
//! Months accept `jan`..`dec`, weekdays `sun`..`sat` (case-insensitive, also
//! inside ranges); weekday `0` and `7` are both Sunday, and a range may end in
//! `sun` (`mon-sun`). Macros: `@hourly`, `@daily`/`@midnight`, `@weekly`,
//! `@monthly`, `@yearly`/`@annually`; `@reboot` is refused.
//!
//! Deliberately refused, each with a message saying what to write instead: a
//! step on a single value (`5/15`: cron implementations disagree on its
//! meaning, write `5-59/15`), backwards ranges (`5-1`), step 0, the Quartz
//! extensions `L`, `W`, `#`, `?`, a seventh (year) field, and expressions that
//! can never fire (`0 0 30 2 *`).
//!
//! # The Vixie day rule
//!
//! When both the day-of-month and the day-of-week field are restricted — that
//! is, neither field *starts with* `*` — a day matches when **either** matches
//! (`0 0 13 * fri` runs on every 13th and on every Friday). Otherwise both
//! must match, so `0 0 */2 * fri` means "Fridays that fall on an odd day". This
//! is the test Vixie cron (and cronie, and Debian's cron) performs with its
//! `DOM_STAR`/`DOW_STAR` flags.
//!
//! # Why not a crate
//!
//! Checked against the workspace's candidates (2026-11): `cron` 0.17 requires a
//! seconds field (a 5-field crontab line is a parse error) and ANDs the two day
//! fields, so `0 0 13 * fri` runs only on Friday the 13th. `croner` 4 supports
//! the OR rule but applies it only when a day field is exactly `*` (so
//! `*/2` + `fri` ORs, unlike Vixie), accepts non-crontab syntax (`L`, `W`, `#`,
//! `?`, `+`, a year field) and reports errors without naming the field. The
//! parser below is small, and the tests in this file pin the behaviour.

use std::fmt;

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

/// One field of a cron expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// Seconds (0-59), only in the 6-field form.
    Second,
    /// Minutes (0-59).
    Minute,
    /// Hours (0-23).
    Hour,
    /// Day of the month (1-31).
    DayOfMonth,
    /// Month (1-12 or `jan`-`dec`).
    Month,
    /// Day of the week (0-7 or `sun`-`sat`; 0 and 7 are Sunday).
    DayOfWeek,
}

const MONTH_NAMES: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const DAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Field {
    /// The field's name as used in error messages (`"day of month"`).
    pub fn name(self) -> &'static str {
        match self {
            Field::Second => "second",
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfMonth => "day of month",
            Field::Month => "month",
            Field::DayOfWeek => "day of week",
        }
    }

    /// What the field accepts, as shown in error messages.
    pub fn allowed(self) -> &'static str {
        match self {
            Field::Second | Field::Minute => "0-59",
            Field::Hour => "0-23",
            Field::DayOfMonth => "1-31",
            Field::Month => "1-12 or jan-dec",
            Field::DayOfWeek => "0-7 or sun-sat (0 and 7 are sunday)",
        }
    }

    fn min(self) -> u32 {
        match self {
            Field::DayOfMonth | Field::Month => 1,
            _ => 0,
        }
    }

    fn max(self) -> u32 {
        match self {
            Field::Second | Field::Minute => 59,
            Field::Hour => 23,
            Field::DayOfMonth => 31,
            Field::Month => 12,
            Field::DayOfWeek => 7,
        }
    }

    /// The range `*` stands for (weekday 7 is the same day as 0).
    fn star_range(self) -> (u32, u32) {
        match self {
            Field::DayOfWeek => (0, 6),
            f => (f.min(), f.max()),
        }
    }

    fn name_value(self, token: &str) -> Option<u32> {
        let names: &[&str] = match self {
            Field::Month => &MONTH_NAMES,
            Field::DayOfWeek => &DAY_NAMES,
            _ => return None,
        };
        let lower = token.to_ascii_lowercase();
        let index = names.iter().position(|n| *n == lower)?;
        Some(index as u32 + u32::from(self == Field::Month))
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a cron expression was refused. Messages name the field, the bad token
/// and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// Nothing but whitespace.
    #[error(
        "cron expression is empty: write 5 fields (minute hour day-of-month month day-of-week) or a macro like @daily"
    )]
    Empty,
    /// Not 5 or 6 fields.
    #[error(
        "cron expression \"{expr}\" has {found} fields: write 5 (minute hour day-of-month month day-of-week) \
         or 6 (a leading seconds field, then those 5)"
    )]
    FieldCount {
        /// The expression as given.
        expr: String,
        /// How many whitespace-separated fields it has.
        found: usize,
    },
    /// `@reboot`, which has no fire times.
    #[error(
        "@reboot is not supported: dc-host schedules run at times, not at host start; \
         use an interval (--every) or a time-based cron expression"
    )]
    Reboot,
    /// An `@word` that is not a known macro.
    #[error("unknown cron macro \"{0}\": use @hourly, @daily (@midnight), @weekly, @monthly or @yearly (@annually)")]
    UnknownMacro(String),
    /// A field that does not parse.
    #[error("cron field {position} ({field}) \"{token}\": {problem}")]
    Field {
        /// 1-based position of the field in the expression as written.
        position: usize,
        /// Which field it is.
        field: Field,
        /// The offending part of the field.
        token: String,
        /// What is wrong and what is allowed.
        problem: String,
    },
    /// A well-formed expression no date can satisfy.
    #[error("cron expression \"{0}\" never fires: none of its days of the month exist in its months")]
    NeverFires(String),
}

/// A parsed cron expression: one bit set per field plus the two Vixie flags.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CronExpr {
    source: String,
    seconds: u64,
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    dom_star: bool,
    dow_star: bool,
    wildcard_time: bool,
}

/// The longest stretch [`CronExpr::next_wall`] searches, in days (a fixed date
/// returns to a given weekday within 12 years, Feb 29 within 8).
const SEARCH_DAYS: u32 = 366 * 30;

impl CronExpr {
    /// Parses a crontab(5) expression or macro (see the module docs).
    pub fn parse(expr: &str) -> Result<CronExpr, CronError> {
        let text = expr.trim();
        if text.is_empty() {
            return Err(CronError::Empty);
        }
        if text.starts_with('@') {
            let expansion = match text.to_ascii_lowercase().as_str() {
                "@reboot" => return Err(CronError::Reboot),
                "@yearly" | "@annually" => "0 0 1 1 *",
                "@monthly" => "0 0 1 * *",
                "@weekly" => "0 0 * * 0",
                "@daily" | "@midnight" => "0 0 * * *",
                "@hourly" => "0 * * * *",
                _ => return Err(CronError::UnknownMacro(text.to_string())),
            };
            let mut parsed = CronExpr::parse_fields(expansion, expansion)?;
            parsed.source = text.to_string();
            return Ok(parsed);
        }
        CronExpr::parse_fields(text, text)
    }

    fn parse_fields(text: &str, source: &str) -> Result<CronExpr, CronError> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let layout: &[Field] = match parts.len() {
            5 => &[Field::Minute, Field::Hour, Field::DayOfMonth, Field::Month, Field::DayOfWeek],
            6 => &[Field::Second, Field::Minute, Field::Hour, Field::DayOfMonth, Field::Month, Field::DayOfWeek],
            found => return Err(CronError::FieldCount { expr: source.to_string(), found }),
        };
        let mut cron = CronExpr {
            source: source.to_string(),
            seconds: 1, // second 0 unless a seconds field says otherwise
            minutes: 0,
            hours: 0,
            days_of_month: 0,
            months: 0,
            days_of_week: 0,
            dom_star: false,
            dow_star: false,
            wildcard_time: false,
        };
        for (index, (&part, &field)) in parts.iter().zip(layout).enumerate() {
            let bits = parse_field(part, field, index + 1)?;
            let starred = part.starts_with('*');
            match field {
                Field::Second => cron.seconds = bits,
                Field::Minute => {
                    cron.minutes = bits;
                    cron.wildcard_time |= starred;
                }
                Field::Hour => {
                    cron.hours = bits;
                    cron.wildcard_time |= starred;
                }
                Field::DayOfMonth => {
                    cron.days_of_month = bits;
                    cron.dom_star = starred;
                }
                Field::Month => cron.months = bits,
                Field::DayOfWeek => {
                    cron.days_of_week = bits;
                    cron.dow_star = starred;
                }
            }
        }
        if cron.never_fires() {
            return Err(CronError::NeverFires(source.to_string()));
        }
        Ok(cron)
    }

    /// True when no (month, day) pair of the expression exists in any year.
    /// Under the OR rule a weekday always matches some day; under the AND rule
    /// every valid date falls on every weekday in some year.
    fn never_fires(&self) -> bool {
        if !self.dom_star && !self.dow_star {
            return false;
        }
        // longest month lengths, February in a leap year
        const DAYS: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        !(1..=12u32).any(|m| bit(self.months, m) && (1..=DAYS[m as usize - 1]).any(|d| bit(self.days_of_month, d)))
    }

    /// The expression as written (macros keep their `@name`).
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when the minute or the hour field starts with `*` — Vixie cron's
    /// "wildcard job". Such jobs follow real time across DST changes (an hourly
    /// job runs every real hour); other jobs are "fixed-time" jobs that run once
    /// per wall-clock match (see [`crate::zone`]).
    pub fn is_wildcard_time(&self) -> bool {
        self.wildcard_time
    }

    /// Whether the date matches the month and day fields (with the Vixie rule).
    pub fn matches_date(&self, date: NaiveDate) -> bool {
        if !bit(self.months, date.month()) {
            return false;
        }
        let dom = bit(self.days_of_month, date.day());
        let dow = bit(self.days_of_week, date.weekday().num_days_from_sunday());
        if self.dom_star || self.dow_star { dom && dow } else { dom || dow }
    }

    /// Whether the wall-clock time matches every field (to the second).
    pub fn matches(&self, wall: NaiveDateTime) -> bool {
        self.matches_date(wall.date())
            && bit(self.hours, wall.hour())
            && bit(self.minutes, wall.minute())
            && bit(self.seconds, wall.second())
    }

    /// The first matching wall-clock time at or after `from` (sub-second parts
    /// of `from` round it up to the next whole second). `None` when nothing
    /// matches within 30 years or the calendar ends.
    pub fn next_wall(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut from = from;
        if from.nanosecond() != 0 {
            from = from.with_nanosecond(0)?.checked_add_signed(chrono::TimeDelta::seconds(1))?;
        }
        let mut date = from.date();
        let mut start = (from.hour(), from.minute(), from.second());
        for _ in 0..SEARCH_DAYS {
            if self.matches_date(date)
                && let Some((h, m, s)) = self.first_time_from(start)
            {
                return Some(date.and_time(NaiveTime::from_hms_opt(h, m, s)?));
            }
            date = date.succ_opt()?;
            start = (0, 0, 0);
        }
        None
    }

    /// The first (hour, minute, second) of the fields at or after `start`.
    fn first_time_from(&self, (h0, m0, s0): (u32, u32, u32)) -> Option<(u32, u32, u32)> {
        let mut h = next_bit(self.hours, h0)?;
        loop {
            let m_from = if h == h0 { m0 } else { 0 };
            let mut m = next_bit(self.minutes, m_from);
            while let Some(minute) = m {
                let s_from = if h == h0 && minute == m0 { s0 } else { 0 };
                if let Some(s) = next_bit(self.seconds, s_from) {
                    return Some((h, minute, s));
                }
                m = next_bit(self.minutes, minute + 1);
            }
            h = next_bit(self.hours, h + 1)?;
        }
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for CronExpr {
    type Err = CronError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CronExpr::parse(s)
    }
}

fn bit(set: u64, n: u32) -> bool {
    n < 64 && set & (1 << n) != 0
}

/// The smallest member of `set` that is `>= from`.
fn next_bit(set: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let rest = set & (u64::MAX << from);
    (rest != 0).then(|| rest.trailing_zeros())
}

fn parse_field(text: &str, field: Field, position: usize) -> Result<u64, CronError> {
    let err = |token: &str, problem: String| CronError::Field { position, field, token: token.to_string(), problem };
    let mut bits = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(err(text, "empty list item (write values separated by single commas)".into()));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(parse_step(step, field).map_err(|p| err(step, p))?)),
            None => (item, None),
        };
        let (lo, hi) = if range == "*" {
            field.star_range()
        } else if let Some((lo, hi)) = range.split_once('-') {
            let lo = parse_value(lo, field).map_err(|p| err(lo, p))?;
            let mut hi_value = parse_value(hi, field).map_err(|p| err(hi, p))?;
            if field == Field::DayOfWeek && hi_value == 0 && hi.eq_ignore_ascii_case("sun") {
                hi_value = 7; // `mon-sun`
            }
            if lo > hi_value {
                return Err(err(range, "range is backwards: write the smaller value first".into()));
            }
            (lo, hi_value)
        } else {
            let value = parse_value(range, field).map_err(|p| err(range, p))?;
            if let Some(step) = step {
                return Err(err(
                    item,
                    format!("a step needs a range or '*' (write {range}-{}/{step})", field.star_range().1),
                ));
            }
            (value, value)
        };
        let mut n = lo;
        while n <= hi {
            let n_bit = if field == Field::DayOfWeek && n == 7 { 0 } else { n };
            bits |= 1 << n_bit;
            n += step.unwrap_or(1);
        }
    }
    Ok(bits)
}

fn parse_value(token: &str, field: Field) -> Result<u32, String> {
    if token.is_empty() {
        return Err(format!("missing value (allowed: {})", field.allowed()));
    }
    if token.bytes().all(|b| b.is_ascii_digit()) {
        return match token.parse::<u32>() {
            Ok(v) if (field.min()..=field.max()).contains(&v) => Ok(v),
            _ => Err(format!("out of range {}", field.allowed())),
        };
    }
    if let Some(v) = field.name_value(token) {
        return Ok(v);
    }
    if token.contains(['L', 'l', 'W', 'w', '#', '?']) && token.len() <= 4 {
        return Err(format!("L, W, # and ? are Quartz extensions, not crontab(5) (allowed: {})", field.allowed()));
    }
    Err(format!("not a valid value (allowed: {}, '*', lists a,b, ranges a-b, steps */n)", field.allowed()))
}

fn parse_step(token: &str, field: Field) -> Result<u32, String> {
    let max = field.max();
    match token.parse::<u32>() {
        Ok(0) => Err("step 0: steps start at 1".into()),
        Ok(n) if token.bytes().all(|b| b.is_ascii_digit()) && n <= max => Ok(n),
        Ok(_) => Err(format!("step out of range 1-{max}")),
        Err(_) => Err(format!("step is not a number (allowed: 1-{max})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").expect("test date")
    }

    /// The next `n` wall times strictly after `from`.
    fn next_n(expr: &str, from: &str, n: usize) -> Vec<String> {
        let cron = CronExpr::parse(expr).expect("parses");
        let mut t = at(from);
        let mut out = Vec::new();
        for _ in 0..n {
            t = cron.next_wall(t + chrono::TimeDelta::seconds(1)).expect("fires");
            out.push(t.format("%Y-%m-%d %H:%M:%S %a").to_string());
        }
        out
    }

    fn field_error(expr: &str) -> String {
        CronExpr::parse(expr).expect_err("refused").to_string()
    }

    #[test]
    fn every_fifteen_minutes() {
        assert_eq!(
            next_n("*/15 * * * *", "2026-01-01 10:07:30", 4),
            [
                "2026-01-01 10:15:00 Thu",
                "2026-01-01 10:30:00 Thu",
                "2026-01-01 10:45:00 Thu",
                "2026-01-01 11:00:00 Thu"
            ]
        );
    }

    #[test]
    fn weekdays_at_nine() {
        assert_eq!(
            next_n("0 9 * * mon-fri", "2026-01-02 09:00:00", 6),
            [
                "2026-01-05 09:00:00 Mon",
                "2026-01-06 09:00:00 Tue",
                "2026-01-07 09:00:00 Wed",
                "2026-01-08 09:00:00 Thu",
                "2026-01-09 09:00:00 Fri",
                "2026-01-12 09:00:00 Mon",
            ]
        );
    }

    #[test]
    fn first_and_fifteenth() {
        assert_eq!(
            next_n("0 0 1,15 * *", "2026-01-01 00:00:00", 3),
            ["2026-01-15 00:00:00 Thu", "2026-02-01 00:00:00 Sun", "2026-02-15 00:00:00 Sun"]
        );
    }

    #[test]
    fn vixie_rule_restricted_dom_and_dow_match_either() {
        // every 13th (Tue Jan 13) and every Friday
        assert_eq!(
            next_n("0 0 13 * fri", "2026-01-01 00:00:00", 5),
            [
                "2026-01-02 00:00:00 Fri",
                "2026-01-09 00:00:00 Fri",
                "2026-01-13 00:00:00 Tue",
                "2026-01-16 00:00:00 Fri",
                "2026-01-23 00:00:00 Fri",
            ]
        );
        assert_eq!(
            next_n("0 0 * * fri", "2026-01-01 00:00:00", 3),
            ["2026-01-02 00:00:00 Fri", "2026-01-09 00:00:00 Fri", "2026-01-16 00:00:00 Fri"]
        );
        assert_eq!(
            next_n("0 0 13 * *", "2026-01-01 00:00:00", 3),
            ["2026-01-13 00:00:00 Tue", "2026-02-13 00:00:00 Fri", "2026-03-13 00:00:00 Fri"]
        );
    }

    #[test]
    fn a_day_field_starting_with_star_means_both_must_match() {
        // odd days that are Fridays: Jan 9, Jan 23, Feb 13 (Jan 2 and Feb 6 are even)
        assert_eq!(
            next_n("0 0 */2 * fri", "2026-01-01 00:00:00", 3),
            ["2026-01-09 00:00:00 Fri", "2026-01-23 00:00:00 Fri", "2026-02-13 00:00:00 Fri"]
        );
        // and the same on the weekday side: the 13th, if it is a weekday (dow */1 = every day)
        assert_eq!(next_n("0 0 13 * */1", "2026-01-01 00:00:00", 1), ["2026-01-13 00:00:00 Tue"]);
    }

    #[test]
    fn sunday_is_zero_seven_and_sun_and_names_are_case_insensitive() {
        let sundays = ["2026-01-04 12:00:00 Sun", "2026-01-11 12:00:00 Sun"];
        for expr in ["0 12 * * 0", "0 12 * * 7", "0 12 * * SUN", "0 12 * * Sun", "0 12 * * 0-7/7"] {
            assert_eq!(next_n(expr, "2026-01-01 00:00:00", 2), sundays, "{expr}");
        }
        assert_eq!(
            next_n("0 0 * * fri-7", "2026-01-01 00:00:00", 4),
            [
                "2026-01-02 00:00:00 Fri",
                "2026-01-03 00:00:00 Sat",
                "2026-01-04 00:00:00 Sun",
                "2026-01-09 00:00:00 Fri"
            ]
        );
        assert_eq!(
            next_n("0 0 * * mon-sun", "2026-01-03 00:00:00", 2),
            ["2026-01-04 00:00:00 Sun", "2026-01-05 00:00:00 Mon"]
        );
        assert_eq!(
            next_n("0 0 1 JAN,jul *", "2026-01-01 00:00:00", 2),
            ["2026-07-01 00:00:00 Wed", "2027-01-01 00:00:00 Fri"]
        );
        assert_eq!(
            next_n("0 0 1 feb-apr/2 *", "2026-01-01 00:00:00", 2),
            ["2026-02-01 00:00:00 Sun", "2026-04-01 00:00:00 Wed"]
        );
    }

    #[test]
    fn ranges_with_steps() {
        assert_eq!(
            next_n("1-30/10 8 * * *", "2026-01-01 00:00:00", 4),
            [
                "2026-01-01 08:01:00 Thu",
                "2026-01-01 08:11:00 Thu",
                "2026-01-01 08:21:00 Thu",
                "2026-01-02 08:01:00 Fri"
            ]
        );
    }

    #[test]
    fn six_fields_have_a_leading_seconds_field() {
        assert_eq!(
            next_n("*/20 * * * * *", "2026-01-01 10:00:05", 3),
            ["2026-01-01 10:00:20 Thu", "2026-01-01 10:00:40 Thu", "2026-01-01 10:01:00 Thu"]
        );
        assert_eq!(next_n("30 0 9 * * *", "2026-01-01 10:00:00", 1), ["2026-01-02 09:00:30 Fri"]);
        // the 5-field form fires at second 0
        assert_eq!(next_n("0 9 * * *", "2026-01-01 09:00:00", 1), ["2026-01-02 09:00:00 Fri"]);
    }

    #[test]
    fn macros_expand_to_their_crontab_lines() {
        let from = "2026-01-15 10:30:00";
        assert_eq!(next_n("@hourly", from, 1), ["2026-01-15 11:00:00 Thu"]);
        assert_eq!(next_n("@daily", from, 1), ["2026-01-16 00:00:00 Fri"]);
        assert_eq!(next_n("@midnight", from, 1), ["2026-01-16 00:00:00 Fri"]);
        assert_eq!(next_n("@weekly", from, 1), ["2026-01-18 00:00:00 Sun"]);
        assert_eq!(next_n("@monthly", from, 1), ["2026-02-01 00:00:00 Sun"]);
        assert_eq!(next_n("@yearly", from, 1), ["2027-01-01 00:00:00 Fri"]);
        assert_eq!(next_n("@Annually", from, 1), ["2027-01-01 00:00:00 Fri"]);
        assert_eq!(CronExpr::parse("@daily").expect("parses").as_str(), "@daily");
        assert!(CronExpr::parse("@hourly").expect("parses").is_wildcard_time());
        assert!(!CronExpr::parse("@daily").expect("parses").is_wildcard_time());
    }

    #[test]
    fn reboot_and_unknown_macros_are_refused() {
        assert_eq!(CronExpr::parse("@reboot"), Err(CronError::Reboot));
        assert!(field_error("@reboot").contains("@reboot is not supported"));
        assert_eq!(
            field_error("@fortnightly"),
            "unknown cron macro \"@fortnightly\": use @hourly, @daily (@midnight), @weekly, @monthly or @yearly (@annually)"
        );
    }

    #[test]
    fn field_errors_name_the_field_the_token_and_what_is_allowed() {
        assert_eq!(field_error("0 25 * * *"), "cron field 2 (hour) \"25\": out of range 0-23");
        assert_eq!(field_error("60 * * * *"), "cron field 1 (minute) \"60\": out of range 0-59");
        assert_eq!(field_error("0 0 25 * * *"), "cron field 3 (hour) \"25\": out of range 0-23");
        assert_eq!(field_error("0 0 0 * *"), "cron field 3 (day of month) \"0\": out of range 1-31");
        assert_eq!(field_error("0 0 * 13 *"), "cron field 4 (month) \"13\": out of range 1-12 or jan-dec");
        assert_eq!(
            field_error("0 0 * * 8"),
            "cron field 5 (day of week) \"8\": out of range 0-7 or sun-sat (0 and 7 are sunday)"
        );
        assert_eq!(field_error("0 0 * * 1-mo"), {
            "cron field 5 (day of week) \"mo\": not a valid value (allowed: 0-7 or sun-sat (0 and 7 are sunday), \
             '*', lists a,b, ranges a-b, steps */n)"
        });
        assert_eq!(field_error("0 0 * jab *").split(':').next(), Some("cron field 4 (month) \"jab\""));
        assert_eq!(field_error("*/0 * * * *"), "cron field 1 (minute) \"0\": step 0: steps start at 1");
        assert_eq!(field_error("*/60 * * * *"), "cron field 1 (minute) \"60\": step out of range 1-59");
        assert_eq!(
            field_error("5/15 * * * *"),
            "cron field 1 (minute) \"5/15\": a step needs a range or '*' (write 5-59/15)"
        );
        assert_eq!(
            field_error("0 5-1 * * *"),
            "cron field 2 (hour) \"5-1\": range is backwards: write the smaller value first"
        );
        assert!(field_error("0 0 1,,2 * *").starts_with("cron field 3 (day of month) \"1,,2\": empty list item"));
        assert!(field_error("0 0 L * *").contains("Quartz extensions"));
        assert!(field_error("0 0 ? * 1#2").contains("cron field 3 (day of month) \"?\""));
    }

    #[test]
    fn wrong_field_counts_empty_and_impossible_dates_are_refused() {
        assert_eq!(CronExpr::parse("  "), Err(CronError::Empty));
        assert_eq!(CronExpr::parse("* * * *"), Err(CronError::FieldCount { expr: "* * * *".into(), found: 4 }));
        assert!(field_error("0 0 0 1 1 * 2027").contains("has 7 fields: write 5"));
        assert_eq!(CronExpr::parse("0 0 30 2 *"), Err(CronError::NeverFires("0 0 30 2 *".into())));
        assert!(CronExpr::parse("0 0 31 4,6,9,11 *").is_err());
        // ... but Feb 29 exists, and under the OR rule a weekday always comes
        assert_eq!(next_n("0 0 29 2 *", "2026-01-01 00:00:00", 1), ["2028-02-29 00:00:00 Tue"]);
        assert_eq!(next_n("0 0 30 2 mon", "2026-01-01 00:00:00", 1), ["2026-02-02 00:00:00 Mon"]);
    }

    #[test]
    fn wildcard_time_follows_the_vixie_flags() {
        for (expr, wild) in
            [("0 * * * *", true), ("*/15 2 * * *", true), ("30 2 * * *", false), ("0,30 1-3 * * *", false)]
        {
            assert_eq!(CronExpr::parse(expr).expect("parses").is_wildcard_time(), wild, "{expr}");
        }
    }

    #[test]
    fn matches_agrees_with_next_wall() {
        let cron = CronExpr::parse("0 0 13 * fri").expect("parses");
        assert!(cron.matches(at("2026-01-02 00:00:00")));
        assert!(cron.matches(at("2026-01-13 00:00:00")));
        assert!(!cron.matches(at("2026-01-14 00:00:00")));
        assert!(!cron.matches(at("2026-01-13 00:00:01")));
    }
}
