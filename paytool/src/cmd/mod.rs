//! One module per paytool command family.
