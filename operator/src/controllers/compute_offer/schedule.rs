//! Is a ComputeOffer inside one of its weekly schedule windows, and when
//! does that change? Pure: windows are parsed once ([`parse_window`],
//! which names the bad field) and evaluated against an instant
//! ([`open_now`]).
//!
//! A window opens on each of its `days` at `start` (local time in its
//! `timezone`) and closes at `end` the same day, or the next day when `end`
//! is not after `start` (a night window), `24:00` being the end of the day.
//! Windows that overlap or touch merge, so the next change is when the
//! offer really opens or closes. Local times that do not exist or repeat
//! around daylight-saving changes resolve as RFC 5545 "compatible" (a
//! skipped time moves forward, a repeated time takes its first instance).

use jiff::civil::{Date, Weekday as CivilWeekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};
use modelpub_crds::compute_offer::{Weekday, Window};

use crate::error::FieldError;

const MINUTES_PER_DAY: u32 = 24 * 60;

/// A validated window.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedWindow {
    pub days: Vec<Weekday>,
    /// Minutes after local midnight, 0..1440.
    pub start: u32,
    /// Minutes after local midnight, 0..=1440 (1440 is `24:00`).
    pub end: u32,
    pub timezone: TimeZone,
    pub timezone_name: String,
}

/// Parses `spec.schedule.windows[index]`; errors name the field.
pub fn parse_window(index: usize, w: &Window) -> Result<ParsedWindow, Vec<FieldError>> {
    let field = |f: &str| format!("spec.schedule.windows[{index}].{f}");
    let mut errors = Vec::new();
    let start = parse_time(&w.start, false)
        .map_err(|e| errors.push(FieldError::new(field("start"), e)))
        .ok();
    let end = parse_time(&w.end, true)
        .map_err(|e| errors.push(FieldError::new(field("end"), e)))
        .ok();
    if let (Some(s), Some(e)) = (start, end)
        && s == e
    {
        errors.push(FieldError::new(
            field("end"),
            "must differ from start (a window that ends before it starts runs past midnight)",
        ));
    }
    if w.days.is_empty() {
        errors.push(FieldError::new(field("days"), "must name at least one day"));
    }
    let timezone = TimeZone::get(&w.timezone)
        .map_err(|_| {
            errors.push(FieldError::new(
                field("timezone"),
                format!(
                    "{:?} is not an IANA time zone (e.g. Europe/Berlin, UTC)",
                    w.timezone
                ),
            ))
        })
        .ok();
    match (start, end, timezone) {
        (Some(start), Some(end), Some(timezone)) if errors.is_empty() => Ok(ParsedWindow {
            days: w.days.clone(),
            start,
            end,
            timezone,
            timezone_name: w.timezone.clone(),
        }),
        _ => Err(errors),
    }
}

/// `HH:MM` (24-hour clock) as minutes after midnight; `24:00` only when
/// `allow_end_of_day`.
fn parse_time(s: &str, allow_end_of_day: bool) -> Result<u32, String> {
    let bad = || {
        format!(
            "{s:?} is not a time HH:MM (00:00 to 23:59{})",
            if allow_end_of_day { ", or 24:00" } else { "" }
        )
    };
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    match (h, m) {
        (24, 0) if allow_end_of_day => Ok(MINUTES_PER_DAY),
        (0..=23, 0..=59) => Ok(h * 60 + m),
        _ => Err(bad()),
    }
}

/// What the schedule says at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenState {
    pub open: bool,
    /// For people: why open or closed, and until when.
    pub reason: String,
    /// When `open` next flips; `None` when it never does (no windows, or
    /// windows covering the whole week).
    pub next_change: Option<Timestamp>,
}

/// One occurrence of a window: [start, end), with the zone to show it in.
#[derive(Debug, Clone)]
struct Interval {
    start: Timestamp,
    end: Timestamp,
    zone: String,
    tz: TimeZone,
}

/// Evaluates `windows` at `now`.
pub fn open_now(windows: &[ParsedWindow], now: Timestamp) -> OpenState {
    if windows.is_empty() {
        return OpenState {
            open: true,
            reason: "no schedule windows: always open".into(),
            next_change: None,
        };
    }
    let merged = merge(occurrences(windows, now));
    let week = SignedDuration::from_hours(7 * 24);
    if let Some(current) = merged.iter().find(|i| i.start <= now && now < i.end) {
        if current.end.duration_since(now) > week {
            return OpenState {
                open: true,
                reason: "schedule windows cover the whole week: always open".into(),
                next_change: None,
            };
        }
        return OpenState {
            open: true,
            reason: format!("inside schedule: open until {}", show(current.end, current)),
            next_change: Some(current.end),
        };
    }
    // Windows recur weekly, so one always starts within the next 8 days.
    match merged.iter().find(|i| i.start > now) {
        Some(next) => OpenState {
            open: false,
            reason: format!("outside schedule: next window {}", show(next.start, next)),
            next_change: Some(next.start),
        },
        None => OpenState {
            open: false,
            reason: "outside schedule: no window in the coming week".into(),
            next_change: None,
        },
    }
}

/// `Monday 18:00 Europe/Amsterdam`.
fn show(t: Timestamp, interval: &Interval) -> String {
    format!(
        "{} {}",
        t.to_zoned(interval.tz.clone()).strftime("%A %H:%M"),
        interval.zone
    )
}

/// Every occurrence of every window that starts between two days before
/// and fifteen days after `now`'s local date: enough to contain `now`, the
/// next change, and more than a week of continuous opening.
fn occurrences(windows: &[ParsedWindow], now: Timestamp) -> Vec<Interval> {
    let mut out = Vec::new();
    for w in windows {
        let today = now.to_zoned(w.timezone.clone()).date();
        for offset in -2i64..=15 {
            let Ok(date) = today.checked_add(offset.days()) else {
                continue;
            };
            if !w.days.contains(&weekday(date.weekday())) {
                continue;
            }
            let end_date_offset = if w.end > w.start { 0 } else { 1 };
            let (Some(start), Some(end)) = (
                local(&w.timezone, date, w.start),
                date.checked_add(end_date_offset.days())
                    .ok()
                    .and_then(|d| local(&w.timezone, d, w.end)),
            ) else {
                continue;
            };
            out.push(Interval {
                start,
                end,
                zone: w.timezone_name.clone(),
                tz: w.timezone.clone(),
            });
        }
    }
    out.sort_by_key(|i| i.start);
    out
}

/// The instant of `minutes` after local midnight on `date` (1440 = the next
/// midnight).
fn local(tz: &TimeZone, date: Date, minutes: u32) -> Option<Timestamp> {
    let (date, minutes) = if minutes >= MINUTES_PER_DAY {
        (date.tomorrow().ok()?, minutes - MINUTES_PER_DAY)
    } else {
        (date, minutes)
    };
    let dt = date.at((minutes / 60) as i8, (minutes % 60) as i8, 0, 0);
    tz.to_timestamp(dt).ok()
}

/// Merges sorted intervals that overlap or touch; the merged interval
/// shows its end in the zone of the occurrence that ends last.
fn merge(sorted: Vec<Interval>) -> Vec<Interval> {
    let mut out: Vec<Interval> = Vec::new();
    for i in sorted {
        match out.last_mut() {
            Some(last) if i.start <= last.end => {
                if i.end > last.end {
                    last.end = i.end;
                    last.zone = i.zone;
                    last.tz = i.tz;
                }
            }
            _ => out.push(i),
        }
    }
    out
}

fn weekday(d: CivilWeekday) -> Weekday {
    match d {
        CivilWeekday::Monday => Weekday::Monday,
        CivilWeekday::Tuesday => Weekday::Tuesday,
        CivilWeekday::Wednesday => Weekday::Wednesday,
        CivilWeekday::Thursday => Weekday::Thursday,
        CivilWeekday::Friday => Weekday::Friday,
        CivilWeekday::Saturday => Weekday::Saturday,
        CivilWeekday::Sunday => Weekday::Sunday,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Weekday::*;

    fn window(days: &[Weekday], start: &str, end: &str, tz: &str) -> ParsedWindow {
        parse_window(
            0,
            &Window {
                days: days.to_vec(),
                start: start.into(),
                end: end.into(),
                timezone: tz.into(),
            },
        )
        .unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn check(windows: &[ParsedWindow], now: &str) -> (bool, Option<Timestamp>, String) {
        let s = open_now(windows, at(now));
        (s.open, s.next_change, s.reason)
    }

    // 2026-03-02 is a Monday.

    #[test]
    fn no_windows_means_always_open() {
        let (open, next, reason) = check(&[], "2026-03-02T10:00:00Z");
        assert!(open && next.is_none(), "{reason}");
    }

    #[test]
    fn a_day_window_opens_and_closes_that_day() {
        let w = [window(&[Monday], "09:00", "17:00", "UTC")];
        assert_eq!(
            check(&w, "2026-03-02T10:00:00Z"),
            (
                true,
                Some(at("2026-03-02T17:00:00Z")),
                "inside schedule: open until Monday 17:00 UTC".into()
            )
        );
        // The end is exclusive, the start inclusive.
        assert_eq!(
            check(&w, "2026-03-02T17:00:00Z").1,
            Some(at("2026-03-09T09:00:00Z"))
        );
        assert!(check(&w, "2026-03-02T09:00:00Z").0);
        assert_eq!(
            check(&w, "2026-03-02T18:00:00Z"),
            (
                false,
                Some(at("2026-03-09T09:00:00Z")),
                "outside schedule: next window Monday 09:00 UTC".into()
            )
        );
        // Sunday before: opens the next day.
        assert_eq!(
            check(&w, "2026-03-01T12:00:00Z").1,
            Some(at("2026-03-02T09:00:00Z"))
        );
    }

    #[test]
    fn a_night_window_runs_past_midnight_into_the_next_day() {
        let w = [window(&[Friday], "22:00", "06:00", "UTC")];
        // Saturday 03:00 is inside Friday's window although Saturday is not listed.
        assert_eq!(
            check(&w, "2026-03-07T03:00:00Z"),
            (
                true,
                Some(at("2026-03-07T06:00:00Z")),
                "inside schedule: open until Saturday 06:00 UTC".into()
            )
        );
        assert!(!check(&w, "2026-03-07T06:00:00Z").0);
        assert!(!check(&w, "2026-03-06T21:59:00Z").0);
        assert_eq!(
            check(&w, "2026-03-06T21:59:00Z").1,
            Some(at("2026-03-06T22:00:00Z"))
        );
    }

    #[test]
    fn end_24_00_is_the_next_midnight() {
        let w = [window(&[Sunday], "18:00", "24:00", "UTC")];
        assert_eq!(
            check(&w, "2026-03-08T23:59:00Z").1,
            Some(at("2026-03-09T00:00:00Z"))
        );
        assert!(!check(&w, "2026-03-09T00:00:00Z").0);
        let all_day = [window(&[Wednesday], "00:00", "24:00", "UTC")];
        assert!(check(&all_day, "2026-03-04T00:00:00Z").0);
        assert!(!check(&all_day, "2026-03-05T00:00:00Z").0);
    }

    #[test]
    fn touching_windows_merge_into_one_opening() {
        let w = [
            window(&[Monday], "00:00", "24:00", "UTC"),
            window(&[Tuesday], "00:00", "12:00", "UTC"),
        ];
        assert_eq!(
            check(&w, "2026-03-02T10:00:00Z").1,
            Some(at("2026-03-03T12:00:00Z"))
        );
    }

    #[test]
    fn windows_covering_the_week_never_close() {
        let every = [
            Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday,
        ];
        let w = [window(&every, "00:00", "24:00", "Europe/Berlin")];
        let (open, next, reason) = check(&w, "2026-03-02T10:00:00Z");
        assert!(open && next.is_none(), "{reason}");
        assert!(reason.contains("always open"), "{reason}");
        // Nightly 18:00-09:00 plus daily 09:00-18:00 also covers the week.
        let split = [
            window(&every, "18:00", "09:00", "UTC"),
            window(&every, "09:00", "18:00", "UTC"),
        ];
        assert_eq!(check(&split, "2026-03-04T03:00:00Z").1, None);
    }

    #[test]
    fn local_times_follow_the_window_time_zone() {
        // 2 March: Amsterdam is UTC+1.
        let w = [window(&[Monday], "18:00", "23:00", "Europe/Amsterdam")];
        assert_eq!(
            check(&w, "2026-03-02T16:30:00Z"),
            (
                false,
                Some(at("2026-03-02T17:00:00Z")),
                "outside schedule: next window Monday 18:00 Europe/Amsterdam".into()
            )
        );
        assert_eq!(
            check(&w, "2026-03-02T17:30:00Z").1,
            Some(at("2026-03-02T22:00:00Z"))
        );
        // 30 March, after the switch to summer time: UTC+2.
        assert_eq!(
            check(&w, "2026-03-30T15:30:00Z").1,
            Some(at("2026-03-30T16:00:00Z"))
        );
        // Monday evening in Tokyo is Monday morning in UTC.
        let tokyo = [window(&[Monday], "18:00", "20:00", "Asia/Tokyo")];
        assert!(check(&tokyo, "2026-03-02T09:30:00Z").0);
    }

    #[test]
    fn a_time_skipped_by_daylight_saving_moves_forward() {
        // 8 March 2026, 02:00-03:00 does not exist in New York.
        let w = [window(&[Sunday], "02:30", "05:00", "America/New_York")];
        // 02:30 resolves to 03:30 EDT = 07:30 UTC.
        assert_eq!(
            check(&w, "2026-03-08T06:00:00Z").1,
            Some(at("2026-03-08T07:30:00Z"))
        );
    }

    #[test]
    fn bad_windows_name_their_fields() {
        let bad = Window {
            days: vec![],
            start: "25:00".into(),
            end: "24:00".into(),
            timezone: "Mars/Olympus".into(),
        };
        let fields: Vec<String> = parse_window(2, &bad)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.schedule.windows[2].start",
                "spec.schedule.windows[2].days",
                "spec.schedule.windows[2].timezone"
            ]
        );
        let same = Window {
            days: vec![Monday],
            start: "08:00".into(),
            end: "08:00".into(),
            timezone: "UTC".into(),
        };
        let e = parse_window(0, &same).unwrap_err();
        assert_eq!(e[0].field, "spec.schedule.windows[0].end");
        assert!(parse_time("24:00", false).is_err());
        assert!(parse_time("9:00", false).is_err());
        assert_eq!(parse_time("23:59", false), Ok(1439));
    }
}
