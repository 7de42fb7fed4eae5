//! Extractors that answer bad input in the API's error shape: a query string
//! that does not parse is 422 `invalid_query`, a body that is not JSON 400
//! `malformed_json`, JSON of the wrong shape 422 `invalid_body`, too large a
//! body 413; each message names the field.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// A query string, deserialized.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state).await.map(|Query(v)| ApiQuery(v)).map_err(|e: QueryRejection| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_query", e.body_text())
        })
    }
}

/// `query` (a raw query string) deserialized, refused as [`ApiQuery`] refuses it.
pub fn query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    Query::<T>::try_from_uri(&format!("/?{query}").parse().map_err(|_| invalid_query("the query string is not valid"))?)
        .map(|Query(v)| v)
        .map_err(|e| invalid_query(e.body_text()))
}

fn invalid_query(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_query", message)
}

/// Path parameters, deserialized.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e: PathRejection| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_path", e.body_text()))
    }
}

/// A JSON body, deserialized.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        axum::Json::<T>::from_request(req, state).await.map(|axum::Json(v)| ApiJson(v)).map_err(|e| {
            let code = match &e {
                JsonRejection::JsonSyntaxError(_) => "malformed_json",
                JsonRejection::JsonDataError(_) => "invalid_body",
                JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
                _ if e.status() == StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
                _ => "invalid_body",
            };
            ApiError::new(e.status(), code, e.body_text())
        })
    }
}
