//! Firstboot's configuration file and kernel command line, split at the input's first NUL.
//! Accepted values validate again as written, and a config written back as kernel command line
//! words resolves to the same seeds, pin, token and NTP server.
#![no_main]

use cluster::pki::CaPin;
use cluster::spec::{JoinToken, SeedUrl};
use firstboot::config::{Config, Overrides, resolve};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file, cmdline) = text.split_once('\0').unwrap_or((text, ""));
    let Ok(config) = resolve(
        Some(("firstboot.toml", file)),
        cmdline,
        &Overrides::default(),
    ) else {
        return;
    };
    for seed in &config.seeds {
        assert_eq!(seed.to_string().parse::<SeedUrl>().as_ref(), Ok(seed));
    }
    assert_eq!(config.pin.to_string().parse::<CaPin>().as_ref(), Ok(&config.pin));
    if let Some(token) = &config.token {
        assert_eq!(token.as_str().parse::<JoinToken>().as_ref(), Ok(token));
    }
    if let Some(words) = as_cmdline(&config) {
        let again = resolve(None, &words, &Overrides::default())
            .unwrap_or_else(|e| panic!("{words:?} is refused: {e}"));
        assert_eq!(again.seeds, config.seeds, "{words:?}");
        assert_eq!(
            (&again.pin, &again.token, &again.ntp),
            (&config.pin, &config.token, &config.ntp)
        );
    }
});

/// The config's seeds, pin, token and NTP server as `launcher.*=` words, when each value can be
/// written as one (no whitespace, no comma inside a seed).
fn as_cmdline(config: &Config) -> Option<String> {
    let seeds: Vec<String> = config.seeds.iter().map(SeedUrl::to_string).collect();
    let mut words = vec![
        format!("launcher.seed={}", seeds.join(",")),
        format!("launcher.pin={}", config.pin),
        format!("launcher.ntp={}", config.ntp),
    ];
    if let Some(token) = &config.token {
        words.push(format!("launcher.token={}", token.as_str()));
    }
    let splits = |s: &str| s.contains(char::is_whitespace);
    let ok = !seeds.iter().any(|s| s.contains(',')) && !words.iter().any(|w| splits(w));
    ok.then(|| words.join(" "))
}
