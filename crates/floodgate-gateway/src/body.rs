//! Reading request bodies within the configured size limit, and request headers the API needs.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName};
use bytes::Bytes;
use floodgate_core::IdempotencyKey;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Reads the whole body, refusing more than `limit_bytes` with `413 body_too_large`: at once
/// when its declared length is over (nothing of it is read, and no `100 Continue` asks for it),
/// else as soon as it has grown over.
pub(crate) async fn read_limited(body: Body, limit_bytes: usize) -> Result<Bytes, ApiError> {
    if http_body::Body::size_hint(&body).lower() > limit_bytes as u64 {
        return Err(ApiError::BodyTooLarge { limit_bytes });
    }
    match Limited::new(body, limit_bytes).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(ApiError::BodyTooLarge { limit_bytes }),
        Err(error) => Err(ApiError::InvalidBody(format!(
            "could not read the body: {error}"
        ))),
    }
}

/// A request's headers and its whole body (as [`read_limited`] reads it). The request is taken
/// whole because axum's `HeaderMap` extractor clones every header.
pub(crate) async fn read_request(
    request: Request,
    limit_bytes: usize,
) -> Result<(HeaderMap, Bytes), ApiError> {
    let (parts, body) = request.into_parts();
    Ok((parts.headers, read_limited(body, limit_bytes).await?))
}

/// Parses a JSON body, naming what is wrong with it.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|error| ApiError::InvalidBody(format!("invalid JSON body: {error}")))
}

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The `Idempotency-Key` header, required on order creation.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<IdempotencyKey, ApiError> {
    let value = headers
        .get(&IDEMPOTENCY_KEY)
        .ok_or(ApiError::MissingIdempotencyKey)?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::InvalidIdempotencyKey)?;
    IdempotencyKey::parse(text).map_err(|_| ApiError::InvalidIdempotencyKey)
}
