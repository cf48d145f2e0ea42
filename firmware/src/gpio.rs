//! The board's pins behind embedded-hal: GPIO character-device lines through
//! linux-embedded-hal (feature `gpio`), or pins that only log their changes
//! (`[gpio] chip = "log"`), to try a configuration on any machine.

use std::fmt;

use embedded_hal::digital::{ErrorKind, ErrorType, InputPin, OutputPin};

/// A pin of the board, or a logged stand-in.
pub enum BoardPin {
    /// A line requested from `/dev/gpiochipN`.
    #[cfg(feature = "gpio")]
    Cdev(linux_embedded_hal::CdevPin),
    /// Logs every change; reads as inactive.
    Logged {
        /// Line number, for the log.
        line: u32,
        /// What the pin is for, for the log.
        role: &'static str,
    },
}

/// A failed pin operation.
#[derive(Debug)]
pub struct PinFailure(String);

impl fmt::Display for PinFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl embedded_hal::digital::Error for PinFailure {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

impl ErrorType for BoardPin {
    type Error = PinFailure;
}

impl OutputPin for BoardPin {
    fn set_low(&mut self) -> Result<(), PinFailure> {
        match self {
            #[cfg(feature = "gpio")]
            BoardPin::Cdev(p) => p.set_low().map_err(|e| PinFailure(e.to_string())),
            BoardPin::Logged { line, role } => {
                log::info!("gpio {role} line {line}: low");
                Ok(())
            }
        }
    }

    fn set_high(&mut self) -> Result<(), PinFailure> {
        match self {
            #[cfg(feature = "gpio")]
            BoardPin::Cdev(p) => p.set_high().map_err(|e| PinFailure(e.to_string())),
            BoardPin::Logged { line, role } => {
                log::info!("gpio {role} line {line}: high");
                Ok(())
            }
        }
    }
}

impl InputPin for BoardPin {
    fn is_high(&mut self) -> Result<bool, PinFailure> {
        match self {
            #[cfg(feature = "gpio")]
            BoardPin::Cdev(p) => p.is_high().map_err(|e| PinFailure(e.to_string())),
            // A logged button is never pressed: with active-low wiring that
            // means it reads high.
            BoardPin::Logged { .. } => Ok(true),
        }
    }

    fn is_low(&mut self) -> Result<bool, PinFailure> {
        self.is_high().map(|h| !h)
    }
}

/// Opens lines of one GPIO chip (or the logged stand-in for `"log"`).
pub struct Chip {
    path: String,
    #[cfg(feature = "gpio")]
    chip: Option<linux_embedded_hal::gpio_cdev::Chip>,
}

impl Chip {
    /// Opens `path` (`/dev/gpiochipN`), or nothing for `"log"`.
    pub fn open(path: &str) -> anyhow::Result<Chip> {
        if path == "log" {
            return Ok(Chip {
                path: path.into(),
                #[cfg(feature = "gpio")]
                chip: None,
            });
        }
        #[cfg(feature = "gpio")]
        {
            let chip = linux_embedded_hal::gpio_cdev::Chip::new(path).map_err(|e| {
                anyhow::anyhow!(
                    "gpio.chip: cannot open {path}: {e} (is the user in the `gpio` group? \
                     `gpiodetect` lists the chips)"
                )
            })?;
            Ok(Chip {
                path: path.into(),
                chip: Some(chip),
            })
        }
        #[cfg(not(feature = "gpio"))]
        anyhow::bail!(
            "gpio.chip = {path:?}: this dla-edge was built without GPIO support; rebuild with \
             `cargo build -p dla-firmware --features gpio`, or set chip = \"log\" to only log pin changes"
        )
    }

    /// Requests `line` as an output, starting at `initial_high`.
    pub fn output(
        &mut self,
        line: u32,
        initial_high: bool,
        role: &'static str,
    ) -> anyhow::Result<BoardPin> {
        self.request(line, Some(initial_high), role)
    }

    /// Requests `line` as an input.
    pub fn input(&mut self, line: u32, role: &'static str) -> anyhow::Result<BoardPin> {
        self.request(line, None, role)
    }

    fn request(
        &mut self,
        line: u32,
        output: Option<bool>,
        role: &'static str,
    ) -> anyhow::Result<BoardPin> {
        #[cfg(feature = "gpio")]
        if let Some(chip) = &mut self.chip {
            use linux_embedded_hal::gpio_cdev::LineRequestFlags;
            let path = &self.path;
            let fail = |e: linux_embedded_hal::gpio_cdev::errors::Error| {
                anyhow::anyhow!("{role}: line {line} of {path}: {e}")
            };
            let handle = chip.get_line(line).map_err(fail)?;
            let handle = match output {
                Some(high) => handle.request(LineRequestFlags::OUTPUT, u8::from(high), "dla-edge"),
                None => handle.request(LineRequestFlags::INPUT, 0, "dla-edge"),
            }
            .map_err(fail)?;
            let pin = linux_embedded_hal::CdevPin::new(handle).map_err(fail)?;
            return Ok(BoardPin::Cdev(pin));
        }
        let _ = (&self.path, output);
        Ok(BoardPin::Logged { line, role })
    }
}
