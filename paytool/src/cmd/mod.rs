//! One module per paytool command family.

pub mod tlv;
