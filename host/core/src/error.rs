//! What kind of failure an error is, independent of its message: callers that
//! must react differently (the REST API's status codes, a scheduler that
//! retries only what may succeed later) match on [`ErrorKind`] instead of on
//! text. Every error type at a crate boundary has a `kind()`.

use serde::Serialize;

/// The kind of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The thing named does not exist (an app, a run, a version).
    NotFound,
    /// The request contradicts the current state (a version already
    /// registered, a downgrade, another app's table, a table change that needs
    /// a migration, a duplicate key).
    Conflict,
    /// The input is wrong and retrying it unchanged cannot succeed (a bad
    /// plugin file, record, argument, declaration or URL).
    Invalid,
    /// A dependency is unreachable or busy; the same request may succeed later
    /// (database down, connection lost, SQLite file gone or locked).
    Unavailable,
    /// A failure of dc-host itself or its environment.
    Internal,
}

impl ErrorKind {
    /// The HTTP status code an API answers with for this kind.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::Invalid => 422,
            ErrorKind::Unavailable => 503,
            ErrorKind::Internal => 500,
        }
    }
}

/// The kind of an sqlx error: lost connections and busy or missing SQLite
/// files are `Unavailable`, unique and foreign-key violations `Conflict`, a
/// missing row `NotFound`.
pub fn sqlx_kind(e: &sqlx::Error) -> ErrorKind {
    if crate::db::is_connection_lost(e) {
        return ErrorKind::Unavailable;
    }
    match e {
        sqlx::Error::RowNotFound => ErrorKind::NotFound,
        sqlx::Error::PoolTimedOut => ErrorKind::Unavailable,
        sqlx::Error::Database(d) => match d.code().as_deref() {
            // SQLite: BUSY, LOCKED, CANTOPEN (and their extended codes)
            Some(c) if ["5", "6", "14", "261", "262", "517"].contains(&c) => ErrorKind::Unavailable,
            // SQLite: UNIQUE / PRIMARY KEY / FOREIGN KEY constraints; PostgreSQL: 23505, 23503
            Some("2067" | "1555" | "787" | "23505" | "23503") => ErrorKind::Conflict,
            // PostgreSQL: data exceptions (22…) and other integrity violations (23…)
            Some(c) if c.starts_with("22") || c.starts_with("23") => ErrorKind::Invalid,
            _ => ErrorKind::Internal,
        },
        _ => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let all =
            [ErrorKind::NotFound, ErrorKind::Conflict, ErrorKind::Invalid, ErrorKind::Unavailable, ErrorKind::Internal];
        let codes: Vec<u16> = all.iter().map(|k| k.http_status()).collect();
        assert_eq!(codes, vec![404, 409, 422, 503, 500]);
        assert_eq!(serde_json::to_string(&ErrorKind::NotFound).expect("json"), "\"not_found\"");
    }
}
