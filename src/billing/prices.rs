//! The price table: GPU classes and their price in millicredits per minute. The arithmetic that
//! turns lease time into credits (`cost`, `hold_for`: charges round down, holds round up) moves
//! with the meter to `atelier_actors::meter::cost` and is re-exported here.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The time → credits arithmetic is the meter's (`atelier_actors::meter::cost`).
pub use atelier_actors::meter::cost::{cost, hold_for, MINUTE_MS};
/// Longest GPU class name accepted in `--gpu-prices`.
pub const MAX_CLASS_CHARS: usize = 32;

/// Millicredits as credits, the way the studio shows them: `10000` → `10`, `1500` → `1.5`,
/// `1` → `0.001`.
pub fn credits_text(millicredits: i64) -> String {
    let whole = millicredits / 1000;
    let frac = (millicredits % 1000).abs();
    if frac == 0 {
        whole.to_string()
    } else {
        let sign = if millicredits < 0 && whole == 0 {
            "-"
        } else {
            ""
        };
        format!(
            "{sign}{whole}.{}",
            format!("{frac:03}").trim_end_matches('0')
        )
    }
}

/// GPU class → millicredits per minute. Parsed from `cpu=100,t4=2000,a100=12000`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceTable(BTreeMap<String, i64>);

impl PriceTable {
    /// Price per minute of a class, if it is offered.
    pub fn price(&self, gpu_class: &str) -> Option<i64> {
        self.0.get(gpu_class).copied()
    }

    /// Classes with their prices, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i64)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// The lowest price per minute of any class.
    pub fn cheapest(&self) -> i64 {
        self.0.values().copied().min().unwrap_or(0)
    }

    pub fn classes(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    /// For clap: `value_parser = PriceTable::parse`.
    pub fn parse(text: &str) -> Result<PriceTable, String> {
        text.parse()
    }
}

impl FromStr for PriceTable {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut map = BTreeMap::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, price) = item
                .split_once('=')
                .ok_or_else(|| format!("expected class=price (e.g. `t4=2000`), got {item:?}"))?;
            let name = name.trim();
            let valid_name = !name.is_empty()
                && name.len() <= MAX_CLASS_CHARS
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !valid_name {
                return Err(format!(
                    "GPU class {name:?} must be 1-{MAX_CLASS_CHARS} characters of a-z, 0-9, - or _"
                ));
            }
            let price: i64 = price.trim().parse().map_err(|_| {
                format!("the price of {name:?} must be a whole number of millicredits per minute, got {price:?}")
            })?;
            if !(1..=1_000_000_000).contains(&price) {
                return Err(format!(
                    "the price of {name:?} must be between 1 and 1000000000 millicredits per minute"
                ));
            }
            if map.insert(name.to_string(), price).is_some() {
                return Err(format!("GPU class {name:?} is listed twice"));
            }
        }
        if map.is_empty() {
            return Err("at least one GPU class with a price is required".into());
        }
        Ok(PriceTable(map))
    }
}

impl fmt::Display for PriceTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (name, price) in &self.0 {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{name}={price}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_table() {
        let t: PriceTable = "cpu=100, t4=2000,a100=12000".parse().unwrap();
        assert_eq!(t.price("t4"), Some(2000));
        assert_eq!(t.price("h100"), None);
        assert_eq!(t.to_string(), "a100=12000,cpu=100,t4=2000");
        for bad in [
            "",
            "cpu",
            "cpu=",
            "cpu=-1",
            "cpu=0",
            "CPU=1",
            "cpu=1,cpu=2",
            "c pu=3",
        ] {
            assert!(bad.parse::<PriceTable>().is_err(), "{bad}");
        }
    }
}
