//! One module per paytool command family.

pub mod cvv;
pub mod emv;
pub mod iso8583;
pub mod kcv;
pub mod keyblock;
pub mod mac;
pub mod pin;
pub mod tlv;
