//! Credit packs sold through Stripe Checkout (`--credit-packs`).
//!
//! `starter=10000:500:usd,studio=100000:4000:usd`: a pack's name, the millicredits it adds, and
//! its price in the currency's minor unit (cents) with the ISO currency code.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use utoipa::ToSchema;

/// Longest pack name.
pub const MAX_PACK_CHARS: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CreditPack {
    pub name: String,
    /// Millicredits the pack adds.
    pub credits: i64,
    /// Price in the currency's minor unit (e.g. cents).
    pub price: i64,
    /// ISO 4217 code, lower case (`usd`).
    pub currency: String,
}

/// The configured packs, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreditPacks(Vec<CreditPack>);

impl CreditPacks {
    pub fn get(&self, name: &str) -> Option<&CreditPack> {
        self.0.iter().find(|p| p.name == name)
    }

    pub fn all(&self) -> &[CreditPack] {
        &self.0
    }

    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|p| p.name.as_str()).collect()
    }

    /// For clap: `value_parser = CreditPacks::parse`.
    pub fn parse(text: &str) -> Result<CreditPacks, String> {
        text.parse()
    }
}

impl FromStr for CreditPacks {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut packs: Vec<CreditPack> = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let bad = || {
                format!(
                    "expected name=millicredits:price:currency (e.g. `starter=10000:500:usd`), \
                     got {item:?}"
                )
            };
            let (name, rest) = item.split_once('=').ok_or_else(bad)?;
            let mut parts = rest.split(':').map(str::trim);
            let (Some(credits), Some(price), Some(currency), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            let name = name.trim();
            let valid_name = !name.is_empty()
                && name.len() <= MAX_PACK_CHARS
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !valid_name {
                return Err(format!(
                    "pack {name:?} must be 1-{MAX_PACK_CHARS} characters of a-z, 0-9, - or _"
                ));
            }
            let credits: i64 = credits
                .parse()
                .ok()
                .filter(|c| (1..=1_000_000_000_000).contains(c))
                .ok_or_else(|| format!("pack {name:?}: millicredits must be a positive number"))?;
            let price: i64 = price
                .parse()
                .ok()
                .filter(|p| (1..=100_000_000).contains(p))
                .ok_or_else(|| {
                    format!("pack {name:?}: the price must be a positive number of minor units")
                })?;
            let currency = currency.to_ascii_lowercase();
            if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_lowercase()) {
                return Err(format!(
                    "pack {name:?}: the currency must be a 3-letter code, e.g. usd"
                ));
            }
            if packs.iter().any(|p| p.name == name) {
                return Err(format!("pack {name:?} is listed twice"));
            }
            packs.push(CreditPack {
                name: name.to_string(),
                credits,
                price,
                currency,
            });
        }
        Ok(CreditPacks(packs))
    }
}

impl fmt::Display for CreditPacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self
            .0
            .iter()
            .map(|p| format!("{}={}:{}:{}", p.name, p.credits, p.price, p.currency))
            .collect();
        f.write_str(&items.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_packs() {
        let packs: CreditPacks = "starter=10000:500:usd, studio=100000:4000:EUR"
            .parse()
            .unwrap();
        assert_eq!(packs.names(), vec!["starter", "studio"]);
        let studio = packs.get("studio").unwrap();
        assert_eq!((studio.credits, studio.price), (100_000, 4000));
        assert_eq!(studio.currency, "eur");
        assert!("".parse::<CreditPacks>().unwrap().all().is_empty());
        for bad in [
            "starter",
            "starter=1:2",
            "starter=1:2:usd:x",
            "Starter=1:2:usd",
            "s=0:2:usd",
            "s=1:-2:usd",
            "s=1:2:dollars",
            "s=1:2:usd,s=3:4:usd",
        ] {
            assert!(bad.parse::<CreditPacks>().is_err(), "{bad}");
        }
    }
}
