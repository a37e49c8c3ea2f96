//! Quantization types by name, and the llama.cpp file type each one maps to.
//!
//! Pure data: no I/O. Names are llama.cpp's (`F16`, `Q8_0`, `Q4_K_M`, ...), matched
//! case-insensitively on input and written in upper case.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A quantization type a cell can be measured at.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Quant(u8);

/// (name, llama_ftype value): the values are `enum llama_ftype` in llama.h.
const TABLE: &[(&str, u32)] = &[
    ("F32", 0),
    ("F16", 1),
    ("Q4_0", 2),
    ("Q4_1", 3),
    ("Q8_0", 7),
    ("Q5_0", 8),
    ("Q5_1", 9),
    ("Q2_K", 10),
    ("Q3_K_S", 11),
    ("Q3_K_M", 12),
    ("Q3_K_L", 13),
    ("Q4_K_S", 14),
    ("Q4_K_M", 15),
    ("Q5_K_S", 16),
    ("Q5_K_M", 17),
    ("Q6_K", 18),
    ("BF16", 32),
    // not a file type: the cells of an endpoint (a server quantbench did not start, whose
    // weights it does not know); never offered for models.toml's `quants`
    ("SERVER", u32::MAX),
];

impl Quant {
    pub const F16: Quant = Quant(1);
    /// The quant of an endpoint's cells: what the server runs is not quantbench's to know.
    pub const SERVER: Quant = Quant(17);

    /// Parses a quant name, ignoring case.
    pub fn parse(s: &str) -> Option<Quant> {
        TABLE
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(s))
            .map(|i| Quant(i as u8))
    }

    /// Canonical (upper-case) name, e.g. `Q4_K_M`.
    pub fn name(self) -> &'static str {
        TABLE[self.0 as usize].0
    }

    /// `llama_ftype` value for `llama_model_quantize`.
    pub fn ftype(self) -> u32 {
        TABLE[self.0 as usize].1
    }

    /// Every quantization type's name, for error messages (not [`Quant::SERVER`]).
    pub fn all_names() -> Vec<&'static str> {
        TABLE
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| *n != "SERVER")
            .collect()
    }

    /// Whether this is a file type (not [`Quant::SERVER`]).
    pub fn is_file_type(self) -> bool {
        self != Quant::SERVER
    }

    /// Float types a missing quant can be derived from, best first.
    pub fn derive_sources() -> [Quant; 3] {
        [
            Quant::F16,
            Quant::parse("BF16").expect("in table"),
            Quant::parse("F32").expect("in table"),
        ]
    }

    /// The highest-precision quant of `quants` (F32 > BF16 > F16 > Q8_0 > Q6_K > … > Q2_K): a
    /// model's quality reference.
    pub fn most_precise(quants: &[Quant]) -> Option<Quant> {
        const ORDER: &[&str] = &[
            "F32", "BF16", "F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_1", "Q5_K_S", "Q5_0", "Q4_K_M",
            "Q4_1", "Q4_K_S", "Q4_0", "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K",
        ];
        ORDER
            .iter()
            .filter_map(|n| Quant::parse(n))
            .find(|q| quants.contains(q))
    }

    /// True for F16, BF16 and F32: the unquantized types.
    pub fn is_float(self) -> bool {
        matches!(self.name(), "F16" | "BF16" | "F32")
    }
}

impl fmt::Display for Quant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Debug for Quant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Quant {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Quant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Quant::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown quant {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_case_insensitively() {
        for name in Quant::all_names() {
            let q = Quant::parse(&name.to_lowercase()).unwrap();
            assert_eq!(q.name(), name);
        }
        assert_eq!(Quant::parse("q4_k_m").unwrap().ftype(), 15);
        assert!(Quant::parse("Q4_K_X").is_none());
        assert_eq!(Quant::F16.name(), "F16");
        assert_eq!(Quant::SERVER.name(), "SERVER");
        assert!(!Quant::all_names().contains(&"SERVER"));
    }
}
