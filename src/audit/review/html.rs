//! A [`Report`] as one self-contained HTML page: inline CSS, charts as
//! inline SVG, no script and no external reference, so that it opens
//! offline. Every string from the log is escaped. Tables take the page's
//! width and wrap long names and statements rather than overflow it; rows
//! are grouped under their policy role.

use std::fmt::{self, Write as _};
use std::io::{self, Write};

use super::filter::DECISIONS;
use super::report::Report;
use super::text::{
    activity_rows, alert_rows, column_rows, head_rows, incident_rows, reads_rows, totals_rows,
    unlisted, writes_rows, ACTIVITY_HEADER, ALERT_HEADER, COLUMNS_HEADER, INCIDENT_HEADER,
    READS_HEADER, WRITES_HEADER,
};
use super::time::Chart;
use super::verified::Status;
use super::Head;
use crate::audit::Decision;

const STYLE: &str = "\
*{box-sizing:border-box}\
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#222;margin:1.5em auto;max-width:1100px;padding:0 1em}\
h1{font-size:1.6em;margin-bottom:.4em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}\
.verification{border:1px solid;border-left-width:6px;border-radius:4px;padding:.6em .9em;margin:.5em 0 1em}\
.verification .status{font-weight:700;font-size:1.15em;margin-right:.5em}\
.s-ok{border-color:#27ae60;background:#eefaf1}.s-ok .status{color:#1e8449}\
.s-incomplete,.s-unverified{border-color:#d68910;background:#fff6e0}.s-incomplete .status,.s-unverified .status{color:#9a5d00}\
.s-failed{border-color:#c0392b;background:#fdecea}.s-failed .status{color:#a93226}\
dl.head{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.15em 1em;margin:0}\
dl.head dt{color:#555}dl.head dd{margin:0;overflow-wrap:anywhere}\
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.92em}\
table{border-collapse:collapse;margin:.5em 0;width:100%}\
table.narrow{width:auto;min-width:24em}\
th,td{padding:.3em .6em;border-bottom:1px solid #e5e5e5;text-align:left;vertical-align:top;overflow-wrap:break-word}\
th{background:#f5f5f5;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\
tr.group th{background:#eaf1f8;color:#1b4f72;border-top:2px solid #c5d7e8}\
td.t,td.code{white-space:nowrap}td.list{min-width:12em}td.code{font-family:ui-monospace,Menlo,Consolas,monospace}\
td.flag{background:#fff3cd;color:#8a5300;font-weight:600;white-space:nowrap}\
td.bad{background:#fdecea;color:#a93226;font-weight:600}\
p.more{color:#555;font-style:italic}\
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

fn status_class(status: Status) -> &'static str {
    match status {
        Status::Ok => "s-ok",
        Status::Incomplete => "s-incomplete",
        Status::Unverified => "s-unverified",
        Status::Failed => "s-failed",
    }
}

/// Writes the page.
pub(super) fn write_html(report: &Report, head: &Head, out: &mut dyn Write) -> io::Result<()> {
    let mut page = String::new();
    write_page(&mut page, report, head).expect("writing to a String cannot fail");
    out.write_all(page.as_bytes())
}

/// Columns whose non-zero counts are highlighted as a problem.
const BAD: [&str; 4] = [
    "refused",
    "other errors",
    "failed logins",
    "without purpose",
];

fn write_page(page: &mut String, report: &Report, head: &Head) -> fmt::Result {
    write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>pgveil access review</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>pgveil access review</h1>\n",
    )?;
    write_head(page, report, head)?;
    section(page, "Totals")?;
    table(page, "totals", &["", "count"], &totals_rows(report), true)?;
    section(page, "Statements by role and user")?;
    grouped_table(page, "activity", &ACTIVITY_HEADER, &activity_rows(report))?;
    section(page, "Refused statements and failed logins")?;
    if report.incidents.is_empty() {
        page.push_str("<p>None.</p>\n");
    } else {
        table(
            page,
            "incidents",
            &INCIDENT_HEADER,
            &incident_rows(report),
            false,
        )?;
        if let Some(note) = unlisted(report) {
            writeln!(page, "<p class=\"more\">{}</p>", escape(&note))?;
        }
    }
    match &report.plaintext {
        Some(chart) => {
            section(
                page,
                &format!("Rows read in plaintext per {} and role", chart.unit()),
            )?;
            plaintext_chart(page, chart)?;
        }
        None => {
            section(page, "Rows read in plaintext")?;
            page.push_str("<p>No records in the period.</p>\n");
        }
    }
    section(page, "Reads of protected columns")?;
    column_chart(page, report)?;
    grouped_table(page, "reads", &READS_HEADER, &reads_rows(report))?;
    section(page, "Writes of protected columns")?;
    if report.writes.is_empty() {
        page.push_str("<p>None.</p>\n");
    } else {
        grouped_table(page, "writes", &WRITES_HEADER, &writes_rows(report))?;
    }
    section(page, "Protected columns")?;
    table(
        page,
        "columns",
        &COLUMNS_HEADER,
        &column_rows(report),
        false,
    )?;
    section(page, "Alerts (one per statement over a bulk threshold)")?;
    if report.alerts.is_empty() {
        page.push_str("<p>None.</p>\n");
    } else {
        table(page, "alerts", &ALERT_HEADER, &alert_rows(report), false)?;
    }
    page.push_str("</body>\n</html>\n");
    Ok(())
}

/// The verification, period, generation time and digest.
fn write_head(page: &mut String, report: &Report, head: &Head) -> fmt::Result {
    let verification = &report.verification;
    writeln!(
        page,
        "<div class=\"verification {}\" id=\"verification\">\
         <span class=\"status\">{}</span>{}</div>",
        status_class(verification.status),
        escape(verification.status.name()),
        escape(&verification.detail),
    )?;
    page.push_str("<dl class=\"head\">\n");
    for (name, value) in head_rows(report, head).into_iter().skip(1) {
        let class = match name {
            "key fingerprint" | "data sha256" => " class=\"mono\"",
            _ => "",
        };
        writeln!(
            page,
            "<dt>{}</dt><dd{class}>{}</dd>",
            escape(name),
            escape(&value)
        )?;
    }
    page.push_str("</dl>\n");
    Ok(())
}

/// `text` safe in HTML text and attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        push_escaped(&mut escaped, c);
    }
    escaped
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '"' => out.push_str("&quot;"),
        '\'' => out.push_str("&#39;"),
        c => out.push(c),
    }
}

fn section(page: &mut String, title: &str) -> fmt::Result {
    writeln!(page, "<h2>{}</h2>", escape(title))?;
    Ok(())
}

/// One cell: numbers right-aligned, flagged counts highlighted, times
/// and SQLSTATEs kept on one line, a list of columns one a line.
fn cell(page: &mut String, header: &str, text: &str) -> fmt::Result {
    if let Some(flag) = text.strip_prefix("! ") {
        return write!(page, "<td class=\"flag\">⚠ {}</td>", escape(flag));
    }
    if header == "columns" {
        let names: Vec<String> = text.split(", ").map(breakable).collect();
        return write!(page, "<td class=\"list\">{}</td>", names.join("<br>"));
    }
    let class = if header == "SQLSTATE" {
        " class=\"code\""
    } else if is_time(text) || header == "rows in window" {
        " class=\"t\""
    } else if !is_number(text) {
        ""
    } else if BAD.contains(&header) && text != "0" {
        " class=\"n bad\""
    } else {
        " class=\"n\""
    };
    write!(page, "<td{class}>{}</td>", breakable(text))
}

/// `2026-11-25T10:00:00Z`.
fn is_time(text: &str) -> bool {
    text.len() == 20 && text.ends_with('Z') && text.as_bytes()[10] == b'T'
}

/// `text` escaped, with line breaks allowed after the dots of names
/// (`public.<wbr>customers.<wbr>national_id`), so that narrow columns
/// wrap names there rather than overflow.
fn breakable(text: &str) -> String {
    let mut html = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        push_escaped(&mut html, c);
        if matches!(c, '.' | '/' | '@') {
            html.push_str("<wbr>");
        }
    }
    html
}

fn header_row(page: &mut String, header: &[&str]) -> fmt::Result {
    page.push_str("<tr>");
    for name in header {
        write!(page, "<th>{}</th>", escape(name))?;
    }
    page.push_str("</tr>\n");
    Ok(())
}

/// A table; `narrow` ones take only the width they need.
fn table(
    page: &mut String,
    id: &str,
    header: &[&str],
    rows: &[Vec<String>],
    narrow: bool,
) -> fmt::Result {
    let class = if narrow { " class=\"narrow\"" } else { "" };
    writeln!(page, "<table id=\"{id}\"{class}>")?;
    header_row(page, header)?;
    for row in rows {
        page.push_str("<tr>");
        for (name, text) in header.iter().zip(row) {
            cell(page, name, text)?;
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</table>\n");
    Ok(())
}

/// A table whose first column is the role: each role heads its group in
/// a row of its own (rows with an empty role continue the group above).
fn grouped_table(
    page: &mut String,
    id: &str,
    header: &[&str],
    rows: &[Vec<String>],
) -> fmt::Result {
    writeln!(page, "<table id=\"{id}\">")?;
    header_row(page, &header[1..])?;
    for row in rows {
        if !row[0].is_empty() {
            writeln!(
                page,
                "<tr class=\"group\"><th colspan=\"{}\">role {}</th></tr>",
                header.len() - 1,
                escape(&row[0])
            )?;
        }
        page.push_str("<tr>");
        for (name, text) in header.iter().zip(row).skip(1) {
            cell(page, name, text)?;
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</table>\n");
    Ok(())
}

fn is_number(cell: &str) -> bool {
    !cell.is_empty() && cell.chars().all(|c| c.is_ascii_digit())
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
fn plaintext_chart(page: &mut String, chart: &Chart) -> fmt::Result {
    let max = (0..chart.buckets)
        .map(|i| chart.total(i))
        .max()
        .unwrap_or(0);
    if max == 0 {
        page.push_str("<p>No rows read in plaintext.</p>\n");
        return Ok(());
    }
    let plot_width = CHART_WIDTH - PLOT_LEFT - 10.0;
    let slot = plot_width / chart.buckets as f64;
    let bar = (slot * 0.8).max(1.0);
    let scale = PLOT_HEIGHT / max as f64;
    let bottom = PLOT_TOP + PLOT_HEIGHT;
    writeln!(
        page,
        "<svg width=\"{CHART_WIDTH}\" height=\"{}\" id=\"plaintext-chart\" \
         viewBox=\"0 0 {CHART_WIDTH} {}\" role=\"img\" aria-label=\"plaintext rows over time\">",
        bottom + 40.0,
        bottom + 40.0
    )?;
    axis(page, max, bottom, plot_width)?;
    let mut stacked = vec![0.0_f64; chart.buckets];
    let colors = ROLE_COLORS.iter().cycle();
    for (series, color) in chart.roles.iter().zip(colors) {
        for (i, &n) in series.rows.iter().enumerate().filter(|(_, &n)| n > 0) {
            let height = n as f64 * scale;
            stacked[i] += height;
            writeln!(
                page,
                "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{height:.1}\" fill=\"{color}\">\
                 <title>{}: {n} rows, {}</title></rect>",
                PLOT_LEFT + i as f64 * slot + (slot - bar) / 2.0,
                bottom - stacked[i],
                escape(&series.role),
                escape(&chart.label(i)),
            )?;
        }
    }
    let every = chart.buckets.div_ceil(TIME_LABELS);
    let mut previous = None;
    for i in (0..chart.buckets).step_by(every) {
        writeln!(
            page,
            "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            PLOT_LEFT + i as f64 * slot,
            bottom + 16.0,
            escape(&chart.axis_label(i, previous))
        )?;
        previous = Some(i);
    }
    page.push_str("</svg>\n");
    legend(
        page,
        ROLE_COLORS
            .iter()
            .cycle()
            .copied()
            .zip(chart.roles.iter().map(|r| r.role.as_str())),
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

/// A horizontal bar per protected column read, split by decision, scaled
/// to the busiest column. Writes are not in it.
fn column_chart(page: &mut String, report: &Report) -> fmt::Result {
    let read: Vec<_> = report
        .columns
        .iter()
        .filter(|c| c.reads.statements() > 0)
        .collect();
    let max = read.iter().map(|c| c.reads.statements()).max().unwrap_or(0);
    if max == 0 {
        page.push_str("<p>No protected column was read.</p>\n");
        return Ok(());
    }
    let plot_width = CHART_WIDTH - COLUMN_LABEL_WIDTH - 60.0;
    let scale = plot_width / max as f64;
    let height = read.len() as f64 * COLUMN_ROW_HEIGHT + 8.0;
    writeln!(
        page,
        "<svg width=\"{CHART_WIDTH}\" height=\"{height}\" id=\"reads-chart\" \
         viewBox=\"0 0 {CHART_WIDTH} {height}\" role=\"img\" aria-label=\"reads per column by decision\">"
    )?;
    for (row, column) in read.iter().enumerate() {
        let y = 4.0 + row as f64 * COLUMN_ROW_HEIGHT;
        writeln!(
            page,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            COLUMN_LABEL_WIDTH - 8.0,
            y + 15.0,
            escape(&column.column)
        )?;
        let mut x = COLUMN_LABEL_WIDTH;
        for (decision, count) in column.reads.iter().filter(|(_, c)| c.statements > 0) {
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
            column.reads.statements()
        )?;
    }
    page.push_str("</svg>\n");
    page.push_str("<p class=\"more\">Statements that read each column, by decision.</p>\n");
    legend(
        page,
        DECISIONS.into_iter().map(|d| (decision_color(d), d.name())),
    )
}
