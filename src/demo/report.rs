//! What the demo reports: one [`Run`] per model × channel (the line of INTERFACES.md §3, fields
//! only added after the seven it names), one [`Decline`] per declined case, the [`Report`] with
//! its `ok` (every run approved with a verified cryptogram, every decline with its expected
//! response code) and the closing table.

use serde::Serialize;
use wallet_sim::flows::Model;

use super::tokenized;

/// Where a provisioned phone pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// A contactless POS: the phone tapped (DE 22 `071`).
    Pos,
    /// In-app / e-commerce: the phone's online cryptogram (DE 22 `100`).
    Online,
    /// An ATM cash advance with online PIN (DE 3 `013000`).
    Atm,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Pos, Channel::Online, Channel::Atm];

    pub fn name(self) -> &'static str {
        match self {
            Channel::Pos => "pos",
            Channel::Online => "online",
            Channel::Atm => "atm",
        }
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One model × channel run: the report line of INTERFACES.md §3 (the first seven fields, in that
/// order; the rest are added).
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub model: String,
    pub channel: Channel,
    pub provisioned: bool,
    pub token_used: bool,
    /// The ARQC was verified (by the issuer, or the token service for a token: an approval) and
    /// the phone accepted the ARPC of the answer.
    pub cryptogram_verified: bool,
    /// DE 39 of the answer ("" when none came).
    pub response_code: String,
    pub detail: String,
    /// Added: the amount asked, minor units of the merchant's currency (TWD).
    pub amount_minor: u64,
    /// Added: what the card is charged for it, minor units of its billing currency: the amount
    /// itself, or the network's conversion (DE 6) for a card billed in another currency.
    pub billed_minor: u64,
    /// Added: what the issuer booked on the card's account for it, minor units.
    pub booked_minor: u64,
    /// Added: the PAN the terminal read, masked (the token for a tokenized model).
    pub device_pan: String,
}

impl Run {
    pub(super) fn failed(model: Model, channel: Channel, provisioned: bool, why: String) -> Run {
        Run {
            model: model.name().into(),
            channel,
            provisioned,
            token_used: false,
            cryptogram_verified: false,
            response_code: String::new(),
            detail: why,
            amount_minor: 0,
            billed_minor: 0,
            booked_minor: 0,
            device_pan: String::new(),
        }
    }

    /// Did what it should: provisioned, approved, cryptogram verified both ways, a token used
    /// exactly when the model tokenizes, and the issuer booked what was paid (or dispensed).
    pub fn ok(&self) -> bool {
        let token_expected = self.model.parse::<Model>().map(tokenized).unwrap_or(!self.token_used);
        self.provisioned
            && self.cryptogram_verified
            && self.response_code == "00"
            && self.token_used == token_expected
            && self.booked_minor == self.billed_minor
            && self.amount_minor > 0
    }
}

/// One declined case: what the network should answer, and what it did.
#[derive(Debug, Clone, Serialize)]
pub struct Decline {
    pub reason: String,
    /// Where it was tried: `pos`, `atm` or `provisioning`.
    pub channel: String,
    /// DE 39 docs/network-spec.md §6 gives for this reason.
    pub expected: String,
    /// DE 39 the network answered ("" when none came).
    pub got: String,
    pub ok: bool,
    pub detail: String,
}

/// The demo report (INTERFACES.md §3, with `declines` added beside `runs`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub runs: Vec<Run>,
    pub declines: Vec<Decline>,
}

impl Report {
    pub fn new(runs: Vec<Run>, declines: Vec<Decline>) -> Report {
        let ok = runs.len() == Model::ALL.len() * Channel::ALL.len()
            && runs.iter().all(Run::ok)
            && !declines.is_empty()
            && declines.iter().all(|d| d.ok);
        Report { ok, runs, declines }
    }

    /// What went wrong, one line each (empty when `ok`).
    pub fn failures(&self) -> Vec<String> {
        let mut f: Vec<String> = self
            .runs
            .iter()
            .filter(|r| !r.ok())
            .map(|r| format!("{} × {}: RC {:?}, {}", r.model, r.channel.name(), r.response_code, r.detail))
            .collect();
        f.extend(self.declines.iter().filter(|d| !d.ok).map(|d| {
            format!("decline {}: expected {}, got {:?} ({})", d.reason, d.expected, d.got, d.detail)
        }));
        if self.runs.len() != Model::ALL.len() * Channel::ALL.len() {
            f.push(format!("{} runs instead of 15", self.runs.len()));
        }
        f
    }

    /// The closing table: model × channel, then the declines.
    pub fn table(&self) -> String {
        let yn = |b: bool| if b { "yes" } else { "no" };
        let mut t = format!(
            "{:<13} {:<7} {:<11} {:<5} {:<10} {:<3} {}\n",
            "model", "channel", "provisioned", "token", "cryptogram", "RC", "detail"
        );
        for r in &self.runs {
            t += &format!(
                "{:<13} {:<7} {:<11} {:<5} {:<10} {:<3} {}{}\n",
                r.model,
                r.channel.name(),
                yn(r.provisioned),
                yn(r.token_used),
                if r.cryptogram_verified { "verified" } else { "NOT" },
                if r.response_code.is_empty() { "--" } else { &r.response_code },
                r.detail,
                if r.ok() { "" } else { "  <-- FAILED" }
            );
        }
        t += &format!(
            "\n{:<48} {:<12} {:<8} {:<3} {}\n",
            "declined case", "where", "expected", "got", "result"
        );
        for d in &self.declines {
            t += &format!(
                "{:<48} {:<12} {:<8} {:<3} {}\n",
                d.reason,
                d.channel,
                d.expected,
                if d.got.is_empty() { "--" } else { &d.got },
                if d.ok { "as expected" } else { "UNEXPECTED" }
            );
        }
        let approved = self.runs.iter().filter(|r| r.ok()).count();
        let declined = self.declines.iter().filter(|d| d.ok).count();
        t += &format!(
            "\n{approved} of {} runs approved with a verified cryptogram; {declined} of {} declines as expected: {}\n",
            self.runs.len(),
            self.declines.len(),
            if self.ok { "OK" } else { "FAILED" }
        );
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approved(model: Model, channel: Channel) -> Run {
        let amount = 1_000;
        Run {
            model: model.name().into(),
            channel,
            provisioned: true,
            token_used: tokenized(model),
            cryptogram_verified: true,
            response_code: "00".into(),
            detail: String::new(),
            amount_minor: amount,
            billed_minor: amount,
            booked_minor: amount,
            device_pan: String::new(),
        }
    }

    fn all() -> Vec<Run> {
        Model::ALL.iter().flat_map(|m| Channel::ALL.map(|c| approved(*m, c))).collect()
    }

    fn declined(ok: bool) -> Decline {
        Decline {
            reason: "wrong PIN (ATM)".into(),
            channel: "atm".into(),
            expected: "55".into(),
            got: if ok { "55" } else { "00" }.into(),
            ok,
            detail: String::new(),
        }
    }

    #[test]
    fn the_report_is_ok_only_when_every_run_and_decline_did_what_it_should() {
        assert!(Report::new(all(), vec![declined(true)]).ok);
        assert!(!Report::new(all(), vec![]).ok, "the declines must be shown");
        assert!(!Report::new(all(), vec![declined(false)]).ok);
        assert!(!Report::new(all()[1..].to_vec(), vec![declined(true)]).ok, "14 runs");
        type Spoil = fn(&mut Run);
        let spoil: [Spoil; 6] = [
            |r| r.cryptogram_verified = false,
            |r| r.response_code = "51".into(),
            |r| r.provisioned = false,
            |r| r.token_used = !r.token_used,
            |r| r.booked_minor = 0,
            |r| r.amount_minor = 0,
        ];
        for (i, f) in spoil.iter().enumerate() {
            let mut runs = all();
            f(&mut runs[7]);
            let r = Report::new(runs, vec![declined(true)]);
            assert!(!r.ok, "spoiler {i}");
            assert_eq!(r.failures().len(), 1, "spoiler {i}: {:?}", r.failures());
        }
    }

    #[test]
    fn report_json_keeps_the_interfaces_fields_in_order() {
        let r = Report::new(all(), vec![declined(true)]);
        let v = serde_json::to_value(&r).unwrap();
        let keys: Vec<&str> = v["runs"][0].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            &keys[..7],
            [
                "model",
                "channel",
                "provisioned",
                "token_used",
                "cryptogram_verified",
                "response_code",
                "detail"
            ]
        );
        assert_eq!(v["runs"][0]["channel"], "pos");
        assert_eq!(v["ok"], true);
        assert_eq!(v["declines"][0]["expected"], "55");
    }
}
