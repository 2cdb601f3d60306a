//! What the phases whose targets depend on their sizes (`cli`, `daemon`) share: how
//! they print a figure as it is measured, and their target lines after the harness's
//! summary, in its form.

use crate::figures::Figure;

/// One target: the figure it applies to, `<=`, `<` or `=`, and the limit in the
/// figure's unit.
pub type Check = (&'static str, &'static str, f64);

/// A value as these phases print it: counts whole; seconds and shares to the
/// thousandth; MiB and fsyncs per request to the hundredth; the rest to the tenth.
pub fn value(value: f64, unit: &str) -> String {
    match unit {
        "requests" | "dispatches" | "watches" | "code" => format!("{value:.0}"),
        "s" | "%" => format!("{value:.3}"),
        "MiB" | "fsyncs per delivered request" => format!("{value:.2}"),
        _ => format!("{value:.1}"),
    }
}

/// Prints `figure` in the harness's form, `name: value unit (detail)`, and keeps it.
pub fn emit(out: &mut Vec<Figure>, figure: Figure) {
    println!(
        "{}: {} {} ({})",
        figure.name,
        value(figure.value, figure.unit),
        figure.unit,
        figure.detail
    );
    out.push(figure);
}

/// `target <figure> <op> <limit> <unit>: <value> <unit> ok|MISSED` per check, or
/// `not measured` when the phase did not run.
pub fn print_targets(checks: &[Check], figures: &[Figure]) {
    for &(name, op, limit) in checks {
        let Some(figure) = figures.iter().find(|f| f.name == name) else {
            println!("target {name} {op} {limit}: not measured");
            continue;
        };
        let met = match op {
            "<=" => figure.value <= limit,
            "<" => figure.value < limit,
            _ => figure.value == limit,
        };
        let unit = figure.unit;
        println!(
            "target {name} {op} {limit} {unit}: {} {unit} {}",
            value(figure.value, unit),
            if met { "ok" } else { "MISSED" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_printed_to_the_precision_of_their_unit() {
        assert_eq!(value(0.0431, "s"), "0.043");
        assert_eq!(value(0.0431, "%"), "0.043");
        assert_eq!(value(1.049, "fsyncs per delivered request"), "1.05");
        assert_eq!(value(21.0, "requests"), "21");
        assert_eq!(value(43.27, "MiB"), "43.27");
    }
}
