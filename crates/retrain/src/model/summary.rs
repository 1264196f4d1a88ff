//! `model.summary()` printed like Keras 3.

use super::Sequential;
use crate::layers::{Layer, LayerRef};

/// What a summary shows beyond the Keras defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct SummaryOptions {
    /// Add a Trainable column (Y / N, `-` for layers without weights), like `show_trainable=True`.
    pub show_trainable: bool,
    /// List the layers of nested models under their row, like `expand_nested=True`.
    pub expand_nested: bool,
}

struct Row {
    label: String,
    shape: String,
    params: usize,
    trainable: &'static str,
    connected: String,
}

fn row(layer: &dyn Layer, depth: usize) -> Row {
    let indent = if depth == 0 {
        String::new()
    } else {
        format!("{}└ ", "   ".repeat(depth))
    };
    let params = layer.param_count();
    Row {
        label: format!("{indent}{} ({})", layer.name(), layer.class_name()),
        shape: layer
            .output_shape()
            .map_or_else(|| "?".to_string(), |s| s.to_string()),
        params,
        trainable: match (params, layer.trainable_variables().is_empty()) {
            (0, _) => "-",
            (_, false) => "Y",
            (_, true) => "N",
        },
        connected: String::new(),
    }
}

fn input_row(model: &Sequential, depth: usize) -> Option<Row> {
    let shape = model.declared_input()?;
    model.is_functional().then(|| Row {
        label: format!(
            "{}input_layer (InputLayer)",
            if depth == 0 {
                String::new()
            } else {
                format!("{}└ ", "   ".repeat(depth))
            }
        ),
        shape: shape.to_string(),
        params: 0,
        trainable: "-",
        connected: "-".to_string(),
    })
}

fn collect(model: &Sequential, depth: usize, options: SummaryOptions, rows: &mut Vec<Row>) {
    rows.extend(input_row(model, depth));
    let connections: Vec<String> = (0..model.layers().len())
        .map(|i| {
            let names: Vec<String> = model
                .inbound_names(i)
                .iter()
                .map(|n| format!("{n}[0][0]"))
                .collect();
            names.join(", ")
        })
        .collect();
    collect_layers(model.layers(), &connections, depth, options, rows);
}

fn collect_layers(
    layers: &[LayerRef],
    connections: &[String],
    depth: usize,
    options: SummaryOptions,
    rows: &mut Vec<Row>,
) {
    for (i, layer) in layers.iter().enumerate() {
        let mut r = row(layer.as_ref(), depth);
        r.connected = connections.get(i).cloned().unwrap_or_default();
        rows.push(r);
        if options.expand_nested {
            match layer.as_model() {
                Some(nested) => collect(nested, depth + 1, options, rows),
                None => collect_layers(&layer.sublayers(), &[], depth + 1, options, rows),
            }
        }
    }
}

/// Thousands separators, as Keras prints parameter counts.
pub fn group_thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn human_bytes(params: usize) -> String {
    let bytes = params as f64 * 4.0;
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", units[unit])
}

/// The summary of `model` as Keras prints it: layer (type), output shape, params, totals.
pub fn summary(model: &Sequential, options: SummaryOptions) -> String {
    let mut rows = Vec::new();
    collect(model, 0, options, &mut rows);

    // Keras adds "Connected to" for graphs that are not a plain stack.
    let connected = model.is_graph();
    let mut headers = vec!["Layer (type)", "Output Shape", "Param #"];
    if connected {
        headers.push("Connected to");
    }
    if options.show_trainable {
        headers.push("Trainable");
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut c = vec![r.label.clone(), r.shape.clone(), group_thousands(r.params)];
            if connected {
                c.push(r.connected.clone());
            }
            if options.show_trainable {
                c.push(r.trainable.to_string());
            }
            c
        })
        .collect();
    let centered = headers.len() - 1;
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .chain([headers[i].len()])
                .max()
                .unwrap_or(0)
                + 2
        })
        .collect();
    let line = |left: &str, mid: &str, right: &str, fill: &str| {
        let parts: Vec<String> = widths.iter().map(|w| fill.repeat(*w)).collect();
        format!("{left}{}{right}\n", parts.join(mid))
    };
    // Parameter counts right aligned, the Trainable column centered, the rest left aligned.
    let cell = |i: usize, text: &str| {
        let w = widths[i] - 2;
        match i {
            2 => format!(" {text:>w$} "),
            i if i == centered && options.show_trainable => format!(" {text:^w$} "),
            _ => format!(" {text:<w$} "),
        }
    };

    let mut out = format!("Model: \"{}\"\n", model.name());
    out += &line("┏", "┳", "┓", "━");
    let head: Vec<String> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| cell(i, h))
        .collect();
    out += &format!("┃{}┃\n", head.join("┃"));
    out += &line("┡", "╇", "┩", "━");
    for (n, c) in cells.iter().enumerate() {
        let body: Vec<String> = c.iter().enumerate().map(|(i, t)| cell(i, t)).collect();
        out += &format!("│{}│\n", body.join("│"));
        if n + 1 < cells.len() {
            out += &line("├", "┼", "┤", "─");
        }
    }
    out += &line("└", "┴", "┘", "─");

    let total = model.param_count();
    let trainable: usize = model.trainable_variables().iter().map(|v| v.numel()).sum();
    let frozen = total - trainable;
    out += &format!(
        " Total params: {} ({})\n",
        group_thousands(total),
        human_bytes(total)
    );
    out += &format!(
        " Trainable params: {} ({})\n",
        group_thousands(trainable),
        human_bytes(trainable)
    );
    out += &format!(
        " Non-trainable params: {} ({})\n",
        group_thousands(frozen),
        human_bytes(frozen)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands_and_sizes_like_keras() {
        assert_eq!(group_thousands(138357544), "138,357,544");
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(human_bytes(138357544), "527.79 MB");
        assert_eq!(human_bytes(20485), "80.02 KB");
        assert_eq!(human_bytes(0), "0.00 B");
    }
}
