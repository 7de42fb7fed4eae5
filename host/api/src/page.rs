//! Cursor pagination: page sizes (default 50, at most 500; more is refused,
//! not silently capped) and opaque cursors. A cursor is the sort key of the
//! last item of a page, tagged with what it pages (the listing and its
//! order), as base64url JSON; a cursor from another listing or order is
//! refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ApiError;

/// Items per page when the request does not say.
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest page a request may ask for.
pub const MAX_LIMIT: u32 = 500;

/// One page of a listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The page size a request asks for, checked (`limit`).
pub fn limit(requested: Option<u32>) -> Result<i64, ApiError> {
    match requested.unwrap_or(DEFAULT_LIMIT) {
        0 => Err(ApiError::invalid("limit must be at least 1")),
        n if n > MAX_LIMIT => Err(ApiError::invalid(format!(
            "limit {n} is more than {MAX_LIMIT} items per page; ask for {MAX_LIMIT} or fewer and follow next_cursor"
        ))),
        n => Ok(i64::from(n)),
    }
}

#[derive(Serialize, Deserialize)]
struct Cursor<K> {
    /// What the cursor pages, e.g. `apps:name`.
    of: String,
    /// The sort key of the last item.
    key: K,
}

/// The cursor continuing after `key` in the listing `of`.
pub fn encode<K: Serialize>(of: &str, key: &K) -> String {
    let json = serde_json::to_vec(&Cursor { of: of.to_string(), key }).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// The key a cursor of the listing `of` holds.
pub fn decode<K: DeserializeOwned>(of: &str, cursor: &str) -> Result<K, ApiError> {
    let bad = || {
        ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_query",
            format!(
                "cursor is not a cursor of this listing ({of}); pass the next_cursor of its previous page unchanged"
            ),
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(cursor.trim()).map_err(|_| bad())?;
    let c: Cursor<K> = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if c.of != of {
        return Err(bad());
    }
    Ok(c.key)
}

/// A page of `rows` fetched with `limit + 1`: the extra row only says that
/// another page exists.
pub fn paged<R, T, K: Serialize>(
    mut rows: Vec<R>,
    limit: i64,
    of: &str,
    key: impl Fn(&R) -> K,
    item: impl FnMut(R) -> Result<T, ApiError>,
) -> Result<Page<T>, ApiError> {
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if more { rows.last().map(|r| encode(of, &key(r))) } else { None };
    Ok(Page { items: rows.into_iter().map(item).collect::<Result<_, _>>()?, next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_cursors() {
        assert_eq!(limit(None).expect("default"), 50);
        assert_eq!(limit(Some(500)).expect("max"), 500);
        assert_eq!(limit(Some(501)).expect_err("over").status().as_u16(), 422);
        assert_eq!(limit(Some(0)).expect_err("zero").status().as_u16(), 422);
        let c = encode("runs", &("2026-01-01T00:00:00Z", "ab"));
        let k: (String, String) = decode("runs", &c).expect("round trip");
        assert_eq!(k.1, "ab");
        assert!(decode::<(String, String)>("apps:name", &c).is_err());
        assert!(decode::<(String, String)>("runs", "not a cursor!").is_err());
    }
}
