//! The encrypting PIN pad: DUKPT, the device side of the crypto crate. Each PIN entry takes the
//! next transaction key (the KSN counter advances and the key is erased, ANSI X9.24-1:2009 §A.2
//! for TDES, X9.24-3-2017 §6.5 for AES), encrypts the PIN block under its PIN working key, and
//! hands over the block with its KSN — DE 52 and DE 53 of the network spec.
//!
//! TDES: ISO 9564-1 format 0 (binds the PAN) under the PIN variant of the transaction key.
//! AES: ISO 9564-1 format 4 (binds the PAN too) under the AES-128 PIN-encryption key derived for
//! the KSN. A format 4 block is 16 bytes, and the network spec's DE 52 carries 8: the AES pad is
//! for acquirers whose spec carries it (and is checked against the host side in the tests).
//!
//! State kept between runs is only the next KSN counter: a reloaded pad is brought back to it
//! from the initial key (the registers are never written anywhere).

use crypto::dukpt::aes::{AesDukptDevice, AesDukptKeyType};
use crypto::dukpt::tdes::TdesDukptDevice;
use crypto::dukpt::{AesKsn, KeyUsage, TdesKsn};
use crypto::keys::{AesKey, SymmetricKey, TdesKey};
use crypto::pin::{Pin, PinBlockFormat, PinFill, encrypt_pin_block};

/// A PIN block and the KSN of the key it is under.
#[derive(Clone)]
pub struct EncryptedPin {
    pub block: Vec<u8>,
    pub ksn: Vec<u8>,
}

impl std::fmt::Debug for EncryptedPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncryptedPin(ksn {})", hex::encode_upper(&self.ksn))
    }
}

/// A DUKPT PIN pad.
#[derive(Debug)]
pub enum PinPad {
    Tdes(Box<TdesDukptDevice>),
    Aes(Box<AesDukptDevice>),
}

impl PinPad {
    /// A TDES pad loaded with its IPEK and initial KSN, brought forward so that the next
    /// transaction's counter is at least `next_counter`.
    pub fn tdes(ipek: &TdesKey, initial_ksn: &TdesKsn, next_counter: u32) -> crypto::Result<Self> {
        let mut d = TdesDukptDevice::load_initial_key(ipek, initial_ksn)?;
        while d.ksn().counter() < next_counter {
            d.next_transaction()?;
        }
        Ok(PinPad::Tdes(Box::new(d)))
    }

    /// An AES pad loaded with its initial key and initial key ID, brought forward likewise.
    pub fn aes(initial_key: &AesKey, initial_key_id: [u8; 8], next_counter: u32) -> crypto::Result<Self> {
        let mut d = AesDukptDevice::load_initial_key(initial_key, initial_key_id);
        while d.ksn().counter() < next_counter {
            d.next_transaction()?;
        }
        Ok(PinPad::Aes(Box::new(d)))
    }

    /// The counter the next PIN entry will use.
    pub fn next_counter(&self) -> u32 {
        match self {
            PinPad::Tdes(d) => d.ksn().counter(),
            PinPad::Aes(d) => d.ksn().counter(),
        }
    }

    /// The PIN block format this pad makes.
    pub fn format(&self) -> PinBlockFormat {
        match self {
            PinPad::Tdes(_) => PinBlockFormat::Iso0,
            PinPad::Aes(_) => PinBlockFormat::Iso4,
        }
    }

    /// Encrypts `pin` for the card `pan` (the PAN or token the card gave) under the next key.
    pub fn encrypt(&mut self, pin: &Pin, pan: &str, fill: &PinFill) -> crypto::Result<EncryptedPin> {
        match self {
            PinPad::Tdes(d) => {
                let (ksn, tk): (TdesKsn, TdesKey) = d.next_transaction()?;
                let key = SymmetricKey::Tdes(crypto::dukpt::tdes::working_key(&tk, KeyUsage::Pin)?);
                let block = encrypt_pin_block(&key, PinBlockFormat::Iso0, pin, pan, fill)?;
                Ok(EncryptedPin { block, ksn: ksn.as_bytes().to_vec() })
            }
            PinPad::Aes(d) => {
                let (ksn, dk): (AesKsn, AesKey) = d.next_transaction()?;
                let key = crypto::dukpt::aes::working_key(&dk, &ksn, KeyUsage::Pin, AesDukptKeyType::Aes128)?;
                let block = encrypt_pin_block(&key, PinBlockFormat::Iso4, pin, pan, fill)?;
                Ok(EncryptedPin { block, ksn: ksn.as_bytes().to_vec() })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crypto::pin::decrypt_pin_block;

    /// The host side (BDK → working key for the KSN sent) reads the PIN the pad encrypted; the
    /// KSN advances per entry, and a pad reloaded at a counter goes on from there.
    #[test]
    fn tdes_pad_agrees_with_the_host_and_advances() {
        // ANSI X9.24-1:2009 Annex A test BDK and KSN.
        let bdk = TdesKey::from_hex("bdk", "0123456789ABCDEFFEDCBA9876543210").unwrap();
        let ksn0 = TdesKsn::from_hex("FFFF9876543210E00000").unwrap();
        let ipek = crypto::dukpt::tdes::derive_ipek(&bdk, &ksn0).unwrap();
        let mut pad = PinPad::tdes(&ipek, &ksn0, 0).unwrap();
        let pin = Pin::new("1234").unwrap();
        let pan = "4761739001010010";
        let mut seen = Vec::new();
        for _ in 0..3 {
            let e = pad.encrypt(&pin, pan, &[0; 8]).unwrap();
            let ksn = TdesKsn::from_slice(&e.ksn).unwrap();
            let k = crypto::dukpt::tdes::derive_working_key(&bdk, &ksn, KeyUsage::Pin).unwrap();
            assert_eq!(
                decrypt_pin_block(&SymmetricKey::Tdes(k), PinBlockFormat::Iso0, &e.block, pan).unwrap(),
                pin
            );
            seen.push(ksn.counter());
        }
        assert_eq!(seen, vec![1, 2, 3]);
        let mut again = PinPad::tdes(&ipek, &ksn0, 4).unwrap();
        assert_eq!(again.next_counter(), 4);
        let e = again.encrypt(&pin, pan, &[0; 8]).unwrap();
        let ksn = TdesKsn::from_slice(&e.ksn).unwrap();
        assert_eq!(ksn.counter(), 4);
        let k = crypto::dukpt::tdes::derive_working_key(&bdk, &ksn, KeyUsage::Pin).unwrap();
        assert_eq!(
            decrypt_pin_block(&SymmetricKey::Tdes(k), PinBlockFormat::Iso0, &e.block, pan).unwrap(),
            pin
        );
    }

    #[test]
    fn aes_pad_agrees_with_the_host() {
        // ANSI X9.24-3-2017 Annex B test BDK and initial key ID.
        let bdk = AesKey::from_hex("bdk", "FEDCBA9876543210F1F1F1F1F1F1F1F1").unwrap();
        let id = [0x12, 0x34, 0x56, 0x78, 0x90, 0x12, 0x34, 0x56];
        let ik = crypto::dukpt::aes::derive_initial_key(&bdk, &id);
        let mut pad = PinPad::aes(&ik, id, 0).unwrap();
        let pin = Pin::new("987654").unwrap();
        let pan = "4895370000000017";
        for want in 1..=2u32 {
            let e = pad.encrypt(&pin, pan, &[7; 8]).unwrap();
            assert_eq!(e.block.len(), 16);
            let ksn = AesKsn::from_slice(&e.ksn).unwrap();
            assert_eq!(ksn.counter(), want);
            let k = crypto::dukpt::aes::derive_working_key(
                &bdk,
                &ksn,
                KeyUsage::Pin,
                Some(AesDukptKeyType::Aes128),
            )
            .unwrap();
            assert_eq!(decrypt_pin_block(&k, PinBlockFormat::Iso4, &e.block, pan).unwrap(), pin);
        }
    }
}
