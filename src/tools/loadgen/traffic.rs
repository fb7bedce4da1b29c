//! What realistic traffic looks like: hours of day, devices, referrers, pages and search terms
//! with their weights, the shopping funnel of event types, session lengths and gaps, and product
//! prices. Pure functions of a seeded RNG.

use std::collections::HashSet;

use chrono::{Days, NaiveDate, NaiveDateTime, TimeDelta, TimeZone};
use clickpipe_actors::features::ZipInfo;
use rand::rngs::StdRng;
use rand::Rng;

/// Relative traffic by local hour of day (0–23): quiet at night, a lunch peak and a larger
/// evening peak.
pub(super) const HOUR_WEIGHTS: [f64; 24] = [
    2.0, 1.2, 0.8, 0.6, 0.6, 0.9, 1.8, 3.0, 4.0, 4.8, 5.2, 5.8, // 00–11
    6.8, 6.9, 6.2, 5.4, 5.0, 5.2, 5.8, 6.8, 7.4, 7.3, 5.8, 3.6, // 12–23
];

/// Device mix of sessions.
pub(super) const DEVICES: [(&str, f64); 3] =
    [("mobile", 0.56), ("desktop", 0.37), ("tablet", 0.07)];

/// Entry referrers (`None` = direct traffic).
pub(super) const ENTRY_REFERRERS: [(Option<&str>, f64); 7] = [
    (None, 0.34),
    (Some("https://www.google.com/"), 0.36),
    (Some("https://www.bing.com/"), 0.05),
    (Some("https://www.facebook.com/"), 0.08),
    (Some("https://www.instagram.com/"), 0.07),
    (Some("https://www.pinterest.com/"), 0.04),
    (Some("https://news.example-mail.com/weekly"), 0.06),
];

/// Browsing pages a `page_view` lands on.
pub(super) const PAGES: [(&str, f64); 11] = [
    ("/", 0.26),
    ("/category/shoes", 0.1),
    ("/category/outdoor", 0.08),
    ("/category/electronics", 0.11),
    ("/category/home", 0.09),
    ("/category/kitchen", 0.07),
    ("/category/toys", 0.05),
    ("/deals", 0.1),
    ("/new-arrivals", 0.07),
    ("/blog/gift-guide", 0.03),
    ("/account", 0.04),
];

pub(super) const SEARCH_TERMS: [&str; 12] = [
    "running+shoes",
    "headphones",
    "coffee+maker",
    "rain+jacket",
    "lego",
    "desk+lamp",
    "yoga+mat",
    "air+fryer",
    "backpack",
    "phone+case",
    "cast+iron+pan",
    "gift+card",
];

pub(super) const SITE: &str = "https://shop.example.com";
pub(super) const USERS: u32 = 250_000;
pub(super) const PRODUCTS: u32 = 5_000;

/// An event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    PageView,
    ProductView,
    Search,
    AddToCart,
    RemoveFromCart,
    Checkout,
    Purchase,
}

impl Kind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Kind::PageView => "page_view",
            Kind::ProductView => "product_view",
            Kind::Search => "search",
            Kind::AddToCart => "add_to_cart",
            Kind::RemoveFromCart => "remove_from_cart",
            Kind::Checkout => "checkout",
            Kind::Purchase => "purchase",
        }
    }
}

/// Index drawn with probability proportional to `weights`.
pub(super) fn pick(rng: &mut StdRng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    // Rounding left `x` at the very top: the last option that can be drawn.
    weights.iter().rposition(|w| *w > 0.0).unwrap_or(0)
}

/// The next event type of a session: a funnel where checkout needs a cart and purchase follows a
/// checkout.
pub(super) fn next_kind(rng: &mut StdRng, prev: Option<Kind>, cart_items: u32) -> Kind {
    use Kind::{AddToCart, Checkout, PageView, ProductView, Purchase, RemoveFromCart, Search};
    let cart = if cart_items > 0 { 1.0 } else { 0.0 };
    // (kind, weight); weights need not sum to 1, unused slots weigh 0.
    let options: [(Kind, f64); 6] = match prev {
        None => [
            (PageView, 0.62),
            (ProductView, 0.2),
            (Search, 0.18),
            (AddToCart, 0.0),
            (Checkout, 0.0),
            (Purchase, 0.0),
        ],
        Some(Checkout) => [
            (Purchase, 0.62),
            (PageView, 0.2),
            (ProductView, 0.1),
            (RemoveFromCart, 0.08 * cart),
            (Search, 0.0),
            (AddToCart, 0.0),
        ],
        Some(Purchase) => [
            (PageView, 0.7),
            (ProductView, 0.2),
            (Search, 0.1),
            (AddToCart, 0.0),
            (Checkout, 0.0),
            (RemoveFromCart, 0.0),
        ],
        Some(ProductView) => [
            (PageView, 0.34),
            (ProductView, 0.24),
            (Search, 0.12),
            (AddToCart, 0.22),
            (Checkout, 0.06 * cart),
            (RemoveFromCart, 0.02 * cart),
        ],
        Some(AddToCart) => [
            (PageView, 0.38),
            (ProductView, 0.3),
            (Search, 0.1),
            (Checkout, 0.18),
            (RemoveFromCart, 0.04),
            (Purchase, 0.0),
        ],
        Some(PageView | Search | RemoveFromCart) => [
            (PageView, 0.5),
            (ProductView, 0.28),
            (Search, 0.15),
            (AddToCart, 0.02),
            (Checkout, 0.06 * cart),
            (RemoveFromCart, 0.02 * cart),
        ],
    };
    options[pick(rng, &options.map(|o| o.1))].0
}

/// Events in a session: 1–30, mostly short (geometric-like, mean ≈ 6).
pub(super) fn session_length(rng: &mut StdRng) -> u32 {
    let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let n = 1.0 + (-u.ln() * 5.5).floor();
    n.min(30.0) as u32
}

/// Time to the next event of a session: log-uniform between 2 s and 5 min.
pub(super) fn gap_ms(rng: &mut StdRng) -> i64 {
    let (lo, hi) = (2_000f64.ln(), 300_000f64.ln());
    rng.random_range(lo..hi).exp() as i64
}

/// A session start 1–7 days ago, at a local hour drawn from [`HOUR_WEIGHTS`] in the ZIP's time
/// zone (UTC without one), as epoch milliseconds.
pub(super) fn session_start_ms(
    rng: &mut StdRng,
    today: NaiveDate,
    now_ms: i64,
    zone: Option<&ZipInfo>,
) -> i64 {
    let days_back = rng.random_range(1..=7u64);
    let date = today
        .checked_sub_days(Days::new(days_back))
        .unwrap_or(today);
    let hour = pick(rng, &HOUR_WEIGHTS) as u32;
    let second_of_hour = rng.random_range(0..3600u32);
    let millis = rng.random_range(0..1000u32);
    let naive = date
        .and_hms_milli_opt(hour, second_of_hour / 60, second_of_hour % 60, millis)
        .unwrap_or_else(|| date.and_time(chrono::NaiveTime::MIN));
    let ms = match zone.and_then(|z| z.timezone) {
        Some(tz) => local_to_utc_ms(&tz, naive),
        None => naive.and_utc().timestamp_millis(),
    };
    // Keep whole sessions (at most 30 × 5 min) in the past.
    if ms > now_ms - 3 * 3_600_000 {
        ms - 86_400_000
    } else {
        ms
    }
}

/// A local wall-clock time in `tz` as epoch milliseconds; a time skipped by a DST change moves
/// an hour later, an ambiguous one takes the earlier instant.
pub(super) fn local_to_utc_ms<Z: TimeZone>(tz: &Z, naive: NaiveDateTime) -> i64 {
    tz.from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(naive + TimeDelta::hours(1)))
                .earliest()
        })
        .map(|t| t.timestamp_millis())
        .unwrap_or_else(|| naive.and_utc().timestamp_millis())
}

/// A random valid ZIP that is not in the reference data (`None` if none is found quickly).
pub(super) fn unknown_zip(rng: &mut StdRng, known: &HashSet<String>) -> Option<String> {
    (0..1000)
        .map(|_| format!("{:05}", rng.random_range(0..100_000u32)))
        .find(|z| !known.contains(z))
}

/// A stable price per product: log-normal around $30, ending in .99.
pub(super) fn sku_price(sku: u32) -> f64 {
    let u1 = hash01(u64::from(sku)).max(1e-12);
    let u2 = hash01(u64::from(sku) ^ 0x9e37_79b9_7f4a_7c15);
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    let p = (3.4 + 0.8 * z).exp().clamp(1.0, 2_000.0);
    p.floor() + 0.99
}

/// A uniform value in [0, 1) derived from `x` (splitmix64).
pub(super) fn hash01(x: u64) -> f64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

pub(super) fn cents(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
