//! `WIDTHxHEIGHT` command-line values.

use std::str::FromStr;

/// An image size given on the command line as `WIDTHxHEIGHT`, e.g. `512x256`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (w, h) = s
            .split_once(['x', 'X'])
            .ok_or_else(|| format!("expected WIDTHxHEIGHT such as 512x256, got {s:?}"))?;
        let parse = |v: &str, what: &str| {
            v.trim()
                .parse::<u32>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{what} in {s:?} must be a positive integer"))
        };
        Ok(Size {
            width: parse(w, "width")?,
            height: parse(h, "height")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_sizes() {
        assert_eq!(
            "512x256".parse::<Size>(),
            Ok(Size {
                width: 512,
                height: 256
            })
        );
        assert!("512".parse::<Size>().is_err());
        assert!("0x256".parse::<Size>().is_err());
        assert!("axb".parse::<Size>().is_err());
    }
}
