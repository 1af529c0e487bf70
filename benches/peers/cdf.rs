//! The fan-out picture: per server, the fraction of proxies that ACKed the change by each
//! time after its publication (a CDF), as an SVG.

use std::path::Path;

use plotters::prelude::*;

/// One server's curve: its name and every proxy's publication → ACK time (ms).
pub struct Curve<'a> {
    pub name: &'a str,
    pub ms: &'a [f64],
}

/// Writes the curves to `path`; x is logarithmic, since the servers may differ by orders of
/// magnitude.
pub fn write(path: &Path, title: &str, curves: &[Curve]) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let floor = 0.1;
    let hi = curves
        .iter()
        .flat_map(|c| c.ms.iter().copied())
        .fold(1.0, f64::max)
        * 1.2;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((floor..hi).log_scale(), 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("ms from publication to the proxy's ACK (log scale)")
        .y_desc("fraction of proxies")
        .draw()?;
    let colors = [RGBColor(200, 60, 20), RGBColor(20, 90, 200)];
    for (curve, color) in curves.iter().zip(colors.iter().cycle()) {
        let mut ms = curve.ms.to_vec();
        ms.sort_by(|a, b| a.total_cmp(b));
        // A step per proxy, drawn at no more than 1,000 steps (10,000 proxies would make
        // the file megabytes for the same picture).
        let n = ms.len();
        let steps = n.min(1000);
        let points = (0..steps)
            .flat_map(|k| {
                let (lo, hi) = (k * n / steps, (k + 1) * n / steps);
                let t = ms[hi - 1].max(floor);
                [(t, lo as f64 / n as f64), (t, hi as f64 / n as f64)]
            })
            .collect::<Vec<_>>();
        let color = *color;
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(format!("{} ({} proxies)", curve.name, ms.len()))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
