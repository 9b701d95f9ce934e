//! One module per paytool command family.

pub mod kcv;
pub mod keyblock;
pub mod mac;
pub mod tlv;
