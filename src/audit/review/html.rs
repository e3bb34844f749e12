//! A [`Report`] as one self-contained HTML page: inline CSS, charts as
//! inline SVG, no script and no external reference, so that it opens
//! offline. Every string from the log is escaped.

use std::fmt::{self, Write as _};
use std::io::{self, Write};

use super::filter::DECISIONS;
use super::report::Report;
use super::text::{
    access_header, access_rows, alert_rows, column_header, column_rows, period_text, totals_rows,
    ALERT_HEADER, UNVERIFIED,
};
use crate::audit::Decision;

const STYLE: &str = "\
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#222;margin:2em auto;max-width:1100px;padding:0 1em}\
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}\
.note{color:#8a5300;background:#fff6e0;border:1px solid #f0d9a8;padding:.5em .8em;border-radius:4px}\
table{border-collapse:collapse;margin:.5em 0}th,td{padding:.3em .7em;border-bottom:1px solid #e5e5e5;text-align:left;vertical-align:top}\
th{background:#f5f5f5;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}\
svg{display:block;margin:.5em 0;max-width:100%;height:auto}svg text{font:11px system-ui,sans-serif;fill:#444}\
.legend span{display:inline-block;margin-right:1.2em}.legend i{display:inline-block;width:.9em;height:.9em;margin-right:.35em;vertical-align:-.1em;border-radius:2px}";

/// Colors for roles in the time chart, reused in turn.
const ROLE_COLORS: [&str; 8] = [
    "#2e86c1", "#c0392b", "#27ae60", "#8e44ad", "#d68910", "#16a085", "#7f8c8d", "#c2185b",
];

fn decision_color(decision: Decision) -> &'static str {
    match decision {
        Decision::Plaintext => "#c0392b",
        Decision::Masked => "#e6a23c",
        Decision::Pseudonym => "#8e6fc1",
        Decision::Null => "#aab7b8",
        Decision::Encrypted => "#2e86c1",
        Decision::Denied => "#34495e",
    }
}

/// Writes the page.
pub(super) fn write_html(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let mut page = String::new();
    write_page(&mut page, report).expect("writing to a String cannot fail");
    out.write_all(page.as_bytes())
}

fn write_page(page: &mut String, report: &Report) -> fmt::Result {
    let title = format!("pgveil access review: {}", period_text(report));
    write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>pgveil access review</h1>\n<p>{period}</p>\n<p class=\"note\">{note}</p>\n",
        title = escape(&title),
        period = escape(&period_text(report)),
        note = escape(UNVERIFIED),
    )?;
    section(page, "Totals")?;
    table(page, &["", "count"], &totals_rows(report))?;
    let unit = if report.buckets.hourly() {
        "hour"
    } else {
        "day"
    };
    section(page, &format!("Rows read in plaintext per {unit} and role"))?;
    plaintext_chart(page, report)?;
    section(page, "Statements per protected column by decision")?;
    column_chart(page, report)?;
    table(page, &column_header(), &column_rows(report))?;
    section(page, "Access by role, actor and column (rows by decision)")?;
    table(page, &access_header(), &access_rows(report))?;
    section(page, "Alerts")?;
    if report.alerts.is_empty() {
        page.push_str("<p>None.</p>\n");
    } else {
        table(page, &ALERT_HEADER, &alert_rows(report))?;
    }
    page.push_str("</body>\n</html>\n");
    Ok(())
}

/// `text` safe in HTML text and attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

fn section(page: &mut String, title: &str) -> fmt::Result {
    writeln!(page, "<h2>{}</h2>", escape(title))?;
    Ok(())
}

/// A table; cells that are numbers are right-aligned.
fn table(page: &mut String, header: &[&str], rows: &[Vec<String>]) -> fmt::Result {
    page.push_str("<table>\n<tr>");
    for cell in header {
        write!(page, "<th>{}</th>", escape(cell))?;
    }
    page.push_str("</tr>\n");
    for row in rows {
        page.push_str("<tr>");
        for cell in row {
            let class = if is_number(cell) { " class=\"n\"" } else { "" };
            write!(page, "<td{class}>{}</td>", escape(cell))?;
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</table>\n");
    Ok(())
}

fn is_number(cell: &str) -> bool {
    !cell.is_empty()
        && cell
            .chars()
            .all(|c| c.is_ascii_digit() || c == ' ' || c == '/')
}

/// A legend: a colored square and a name per entry.
fn legend<'a>(page: &mut String, entries: impl Iterator<Item = (&'a str, &'a str)>) -> fmt::Result {
    page.push_str("<p class=\"legend\">");
    for (color, name) in entries {
        write!(
            page,
            "<span><i style=\"background:{color}\"></i>{}</span>",
            escape(name)
        )?;
    }
    page.push_str("</p>\n");
    Ok(())
}

const CHART_WIDTH: f64 = 900.0;
const PLOT_LEFT: f64 = 60.0;
const PLOT_TOP: f64 = 12.0;
const PLOT_HEIGHT: f64 = 200.0;
/// At most this many time labels under the chart.
const TIME_LABELS: usize = 8;

/// Stacked bars: per time bucket, the plaintext rows of each role.
fn plaintext_chart(page: &mut String, report: &Report) -> fmt::Result {
    let buckets = report.buckets;
    let totals: Vec<u64> = (0..buckets.count)
        .map(|i| {
            report
                .plaintext
                .values()
                .map(|rows| rows.get(&i).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0);
    if max == 0 {
        page.push_str("<p>No rows read in plaintext.</p>\n");
        return Ok(());
    }
    let plot_width = CHART_WIDTH - PLOT_LEFT - 10.0;
    let slot = plot_width / buckets.count as f64;
    let bar = (slot * 0.8).max(1.0);
    let scale = PLOT_HEIGHT / max as f64;
    let bottom = PLOT_TOP + PLOT_HEIGHT;
    writeln!(
        page,
        "<svg width=\"{CHART_WIDTH}\" height=\"{}\" \
         viewBox=\"0 0 {CHART_WIDTH} {}\" role=\"img\" aria-label=\"plaintext rows over time\">",
        bottom + 40.0,
        bottom + 40.0
    )?;
    axis(page, max, bottom, plot_width)?;
    let mut stacked = vec![0.0_f64; buckets.count];
    let colors = ROLE_COLORS.iter().cycle();
    for ((role, rows), color) in report.plaintext.iter().zip(colors) {
        for (&i, &n) in rows {
            let height = n as f64 * scale;
            stacked[i] += height;
            writeln!(
                page,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{height:.1}\" fill=\"{color}\">\
                 <title>{}: {n} rows, {}</title></rect>",
                PLOT_LEFT + i as f64 * slot + (slot - bar) / 2.0,
                bottom - stacked[i],
                escape(role),
                escape(&buckets.label(i)),
            )?;
        }
    }
    let every = buckets.count.div_ceil(TIME_LABELS);
    for i in (0..buckets.count).step_by(every) {
        writeln!(
            page,
            "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            PLOT_LEFT + i as f64 * slot,
            bottom + 16.0,
            escape(&buckets.label(i))
        )?;
    }
    page.push_str("</svg>\n");
    legend(
        page,
        ROLE_COLORS
            .iter()
            .cycle()
            .copied()
            .zip(report.plaintext.keys().map(String::as_str)),
    )
}

/// The y axis of the time chart: gridlines at 0, half and the maximum.
fn axis(page: &mut String, max: u64, bottom: f64, plot_width: f64) -> fmt::Result {
    for (value, y) in [
        (0, bottom),
        (max / 2, bottom - PLOT_HEIGHT / 2.0),
        (max, PLOT_TOP),
    ] {
        writeln!(
            page,
            "<line x1=\"{PLOT_LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{value}</text>",
            PLOT_LEFT + plot_width,
            PLOT_LEFT - 6.0,
            y + 4.0
        )?;
    }
    Ok(())
}

const COLUMN_LABEL_WIDTH: f64 = 260.0;
const COLUMN_ROW_HEIGHT: f64 = 24.0;

/// A horizontal bar per protected column, split by decision, scaled to
/// the busiest column.
fn column_chart(page: &mut String, report: &Report) -> fmt::Result {
    let max = report
        .columns
        .values()
        .map(|t| t.statements())
        .max()
        .unwrap_or(0);
    if max == 0 {
        page.push_str("<p>No protected column was accessed.</p>\n");
        return Ok(());
    }
    let plot_width = CHART_WIDTH - COLUMN_LABEL_WIDTH - 60.0;
    let scale = plot_width / max as f64;
    let height = report.columns.len() as f64 * COLUMN_ROW_HEIGHT + 8.0;
    writeln!(
        page,
        "<svg width=\"{CHART_WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {CHART_WIDTH} {height}\" role=\"img\" aria-label=\"statements per column by decision\">"
    )?;
    for (row, (column, tally)) in report.columns.iter().enumerate() {
        let y = 4.0 + row as f64 * COLUMN_ROW_HEIGHT;
        writeln!(
            page,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            COLUMN_LABEL_WIDTH - 8.0,
            y + 15.0,
            escape(column)
        )?;
        let mut x = COLUMN_LABEL_WIDTH;
        for (decision, count) in tally.iter().filter(|(_, c)| c.statements > 0) {
            let width = count.statements as f64 * scale;
            writeln!(
                page,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{width:.1}\" height=\"18\" fill=\"{}\">\
                 <title>{}: {} statements, {} rows</title></rect>",
                decision_color(decision),
                decision.name(),
                count.statements,
                count.rows
            )?;
            x += width;
        }
        writeln!(
            page,
            "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            x + 6.0,
            y + 15.0,
            tally.statements()
        )?;
    }
    page.push_str("</svg>\n");
    legend(
        page,
        DECISIONS.into_iter().map(|d| (decision_color(d), d.name())),
    )
}
