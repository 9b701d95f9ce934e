//! One module per paytool command family.

pub mod iso8583;
pub mod kcv;
pub mod keyblock;
pub mod mac;
pub mod tlv;
