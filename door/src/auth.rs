//! Bearer credentials, compared in constant time: 401 when the request carries none, 403 when
//! it carries a wrong one. The credential never reaches a log or an answer.

use axum::http::{HeaderMap, StatusCode, header};
use subtle::ConstantTimeEq;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer` header (401).
    Missing,
    /// A bearer credential that is not the one expected (403).
    Wrong,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::Missing => StatusCode::UNAUTHORIZED,
            Refusal::Wrong => StatusCode::FORBIDDEN,
        }
    }

    pub fn detail(self) -> &'static str {
        match self {
            Refusal::Missing => "an Authorization: Bearer credential is required",
            Refusal::Wrong => "the credential is not valid here",
        }
    }
}

/// The bearer credential of a request, if it has one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim()).filter(|t| !t.is_empty())
}

/// Constant-time equality of two secrets (the length is not secret).
pub fn same(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Checks the request's bearer credential against `expected`.
pub fn check(headers: &HeaderMap, expected: &str) -> Result<(), Refusal> {
    match bearer(headers) {
        None => Err(Refusal::Missing),
        Some(t) if same(t, expected) => Ok(()),
        Some(_) => Err(Refusal::Wrong),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::AUTHORIZATION, v.parse().expect("header"));
        m
    }

    #[test]
    fn missing_wrong_and_right() {
        assert_eq!(check(&HeaderMap::new(), "s3cret"), Err(Refusal::Missing));
        assert_eq!(check(&h("Basic czNjcmV0"), "s3cret"), Err(Refusal::Missing));
        assert_eq!(check(&h("Bearer "), "s3cret"), Err(Refusal::Missing));
        assert_eq!(check(&h("Bearer s3cre"), "s3cret"), Err(Refusal::Wrong));
        assert_eq!(check(&h("Bearer s3cret"), "s3cret"), Ok(()));
        assert_eq!(check(&h("bearer s3cret"), "s3cret"), Ok(()));
    }
}
