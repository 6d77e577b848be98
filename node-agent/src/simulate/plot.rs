//! `report.svg`: accuracy and loss per round, the federation against each
//! institution training alone.

use std::path::Path;

use plotters::prelude::*;

use super::report::Report;

const FEDERATED: RGBColor = RGBColor(31, 119, 180);
const LOCAL: [RGBColor; 6] = [
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];

type Series = (String, RGBColor, Vec<(u32, f64)>);

pub fn write_svg(report: &Report, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1100, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (left, right) = root.split_horizontally(550);
    let series = |pick: fn(f64, f64) -> f64| -> Vec<Series> {
        let mut all = vec![(
            "federated".to_string(),
            FEDERATED,
            report
                .rounds
                .iter()
                .filter_map(|r| Some((r.round, pick(r.accuracy?, r.loss?))))
                .collect(),
        )];
        for (i, l) in report.local_only.iter().enumerate() {
            all.push((
                format!("{} alone", l.institution),
                LOCAL[i % LOCAL.len()],
                l.curve
                    .iter()
                    .map(|p| (p.round, pick(p.accuracy, p.loss)))
                    .collect(),
            ));
        }
        all
    };
    panel(
        &left,
        "test accuracy",
        &series(|a, _| a),
        Some((0.0, 1.0)),
        SeriesLabelPosition::LowerRight,
    )?;
    panel(
        &right,
        "test loss",
        &series(|_, l| l),
        None,
        SeriesLabelPosition::MiddleRight,
    )?;
    root.present().map_err(plot_err)?;
    Ok(())
}

fn panel(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    title: &str,
    series: &[Series],
    y_range: Option<(f64, f64)>,
    legend: SeriesLabelPosition,
) -> anyhow::Result<()> {
    let rounds = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.0))
        .max()
        .unwrap_or(1)
        .max(2);
    let (lo, hi) = y_range.unwrap_or_else(|| {
        let values = series.iter().flat_map(|s| s.2.iter().map(|p| p.1));
        let hi = values.clone().fold(f64::MIN, f64::max);
        let lo = values.fold(f64::MAX, f64::min);
        if hi > lo {
            (0.0f64.min(lo), hi * 1.05)
        } else {
            (0.0, 1.0)
        }
    });
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(1u32..rounds, lo..hi)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("round")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(plot_err)?;
    for (name, color, points) in series {
        let width = if name == "federated" { 3 } else { 1 };
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(width),
            ))
            .map_err(plot_err)?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 18, y)], color.stroke_width(width))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .position(legend)
        .draw()
        .map_err(plot_err)?;
    Ok(())
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("cannot draw report.svg: {e:?}")
}
