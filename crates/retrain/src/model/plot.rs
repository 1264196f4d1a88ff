//! `plot_model`: the layer graph as DOT, SVG or PNG, laid out in Rust (no Graphviz needed for
//! SVG and PNG). Frozen layers are drawn grey, trainable ones blue; residual connections of blocks
//! appear as an `Add` node with its skip edge when blocks are expanded.

use super::{LeafGraph, Sequential, INPUT_NAME};
use crate::draw::{Canvas, BLACK};
use crate::error::{Error, Result};
use crate::layers::Layer;
use image::Rgb;
use std::path::Path;

/// Direction of the graph, as in Graphviz / Keras `rankdir`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RankDir {
    /// Top to bottom.
    #[default]
    TB,
    /// Bottom to top (the seed's `rankdir='BT'`).
    BT,
    /// Left to right.
    LR,
    /// Right to left.
    RL,
}

/// What the picture shows.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlotOptions {
    /// Direction.
    pub rankdir: RankDir,
    /// Output shapes under each name.
    pub show_shapes: bool,
    /// "trainable: Y/N" under each layer with weights.
    pub show_trainable: bool,
    /// Layers of nested models and blocks instead of one box each.
    pub expand_nested: bool,
}

struct Node {
    lines: Vec<String>,
    frozen: Option<bool>,
}

/// Layers as nodes, data flow as edges.
struct Graph {
    nodes: Vec<Node>,
    edges: Vec<(usize, usize)>,
}

impl Graph {
    /// Add a node fed by `sources`.
    fn push(&mut self, node: Node, sources: &[Option<usize>]) -> usize {
        self.nodes.push(node);
        let id = self.nodes.len() - 1;
        self.edges
            .extend(sources.iter().flatten().map(|&from| (from, id)));
        id
    }
}

fn node(layer: &dyn Layer, options: &PlotOptions) -> Node {
    let mut lines = vec![format!("{} ({})", layer.name(), layer.class_name())];
    if options.show_shapes {
        lines.push(
            layer
                .output_shape()
                .map_or_else(|| "?".into(), |s| s.to_string()),
        );
    }
    let has_weights = layer.param_count() > 0;
    let frozen = has_weights.then(|| layer.trainable_variables().is_empty());
    if options.show_trainable && has_weights {
        lines.push(format!(
            "trainable: {}",
            if frozen == Some(true) { "N" } else { "Y" }
        ));
    }
    Node { lines, frozen }
}

fn graph(model: &Sequential, options: &PlotOptions) -> Graph {
    let mut graph = Graph {
        nodes: Vec::new(),
        edges: Vec::new(),
    };
    let input = model.declared_input().map(|shape| {
        let mut lines = vec![format!("{INPUT_NAME} (InputLayer)")];
        if options.show_shapes {
            lines.push(shape.to_string());
        }
        graph.push(
            Node {
                lines,
                frozen: None,
            },
            &[],
        )
    });
    // Expanded: the leaf layers of nested models and blocks, residual adds included.
    let (layers, wiring) = if options.expand_nested {
        let leaves = LeafGraph::of(model);
        (leaves.layers, leaves.wiring)
    } else {
        let wiring = (0..model.layers().len())
            .map(|i| model.inbound(i))
            .collect();
        (model.layers().to_vec(), wiring)
    };
    let mut tensors = vec![input];
    for (layer, sources) in layers.iter().zip(&wiring) {
        let sources: Vec<Option<usize>> = sources.iter().map(|&j| tensors[j]).collect();
        tensors.push(Some(graph.push(node(layer.as_ref(), options), &sources)));
    }
    graph
}

/// Graphviz DOT text.
pub fn to_dot(model: &Sequential, options: &PlotOptions) -> String {
    let g = graph(model, options);
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir={:?};\n  node [shape=box, style=\"rounded,filled\", fontname=monospace];\n",
        model.name(),
        options.rankdir
    );
    for (i, n) in g.nodes.iter().enumerate() {
        let label = n.lines.join("\\n").replace('"', "\\\"");
        out += &format!(
            "  n{i} [label=\"{label}\", fillcolor=\"{}\"];\n",
            fill(n.frozen).1
        );
    }
    for (a, b) in &g.edges {
        out += &format!("  n{a} -> n{b};\n");
    }
    out + "}\n"
}

fn fill(frozen: Option<bool>) -> (Rgb<u8>, &'static str) {
    match frozen {
        Some(true) => (Rgb([215, 215, 215]), "#d7d7d7"),
        Some(false) => (Rgb([198, 225, 250]), "#c6e1fa"),
        None => (Rgb([255, 255, 255]), "#ffffff"),
    }
}

const CHAR_W: i64 = 8;
const LINE_H: i64 = 12;
const PAD: i64 = 8;
const GAP: i64 = 36;

struct Layout {
    boxes: Vec<(i64, i64, i64, i64)>,
    /// For each edge, the distance of its detour beside the boxes (`None`: next box, straight).
    detours: Vec<Option<i64>>,
    width: i64,
    height: i64,
}

/// Give every edge that skips boxes its own lane beside them, so that overlapping skips
/// (Inception's branches, residual connections) stay apart: greedy interval colouring.
fn lanes(edges: &[(usize, usize)]) -> (Vec<Option<usize>>, usize) {
    let mut order: Vec<usize> = (0..edges.len())
        .filter(|&e| edges[e].1 != edges[e].0 + 1)
        .collect();
    order.sort_by_key(|&e| (edges[e].0.min(edges[e].1), edges[e].0.max(edges[e].1)));
    let mut lane_end: Vec<usize> = Vec::new();
    let mut lane = vec![None; edges.len()];
    for e in order {
        let (lo, hi) = (edges[e].0.min(edges[e].1), edges[e].0.max(edges[e].1));
        let k = match lane_end.iter().position(|&end| end < lo) {
            Some(k) => k,
            None => {
                lane_end.push(0);
                lane_end.len() - 1
            }
        };
        lane_end[k] = hi;
        lane[e] = Some(k);
    }
    (lane, lane_end.len())
}

const LANE: i64 = 12;

fn layout(g: &Graph, rankdir: RankDir, scale: i64) -> Layout {
    let box_w = g
        .nodes
        .iter()
        .flat_map(|n| n.lines.iter().map(|l| l.chars().count() as i64))
        .max()
        .unwrap_or(10)
        * CHAR_W
        * scale
        + 2 * PAD;
    let box_h = g
        .nodes
        .iter()
        .map(|n| n.lines.len() as i64)
        .max()
        .unwrap_or(1)
        * LINE_H
        * scale
        + 2 * PAD;
    let n = g.nodes.len() as i64;
    let (lane, count) = lanes(&g.edges);
    let detours = lane
        .iter()
        .map(|k| k.map(|k| (20 + LANE * k as i64) * scale))
        .collect();
    let side = (40 + LANE * count as i64) * scale;
    let vertical = matches!(rankdir, RankDir::TB | RankDir::BT);
    let (width, height) = if vertical {
        (box_w + 2 * GAP + side, n * (box_h + GAP) + GAP)
    } else {
        (n * (box_w + GAP) + GAP, box_h + 2 * GAP + side)
    };
    let boxes = (0..n)
        .map(|i| {
            let rank = match rankdir {
                RankDir::TB | RankDir::LR => i,
                RankDir::BT | RankDir::RL => n - 1 - i,
            };
            if vertical {
                (GAP, GAP + rank * (box_h + GAP), box_w, box_h)
            } else {
                (GAP + rank * (box_w + GAP), GAP, box_w, box_h)
            }
        })
        .collect();
    Layout {
        boxes,
        detours,
        width,
        height,
    }
}

/// Anchor points of an edge: from the side of `a` facing `b` to the side of `b` facing `a`.
fn anchors(l: &Layout, a: usize, b: usize, vertical: bool) -> ((i64, i64), (i64, i64)) {
    let (ax, ay, aw, ah) = l.boxes[a];
    let (bx, by, bw, bh) = l.boxes[b];
    if vertical {
        let down = by > ay;
        (
            (ax + aw / 2, if down { ay + ah } else { ay }),
            (bx + bw / 2, if down { by } else { by + bh }),
        )
    } else {
        let right = bx > ax;
        (
            (if right { ax + aw } else { ax }, ay + ah / 2),
            (if right { bx } else { bx + bw }, by + bh / 2),
        )
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG picture.
pub fn to_svg(model: &Sequential, options: &PlotOptions) -> String {
    let g = graph(model, options);
    let l = layout(&g, options.rankdir, 1);
    let vertical = matches!(options.rankdir, RankDir::TB | RankDir::BT);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\n\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\"><path d=\"M 0 0 L 10 5 L 0 10 z\"/></marker></defs>\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        w = l.width,
        h = l.height
    );
    for (&(a, b), detour) in g.edges.iter().zip(&l.detours) {
        let ((x1, y1), (x2, y2)) = anchors(&l, a, b, vertical);
        let path = if let Some(detour) = detour.filter(|_| vertical) {
            let bend = l.boxes[a].0 + l.boxes[a].2 + 2 * detour;
            format!(
                "M {} {} C {bend} {} {bend} {} {} {}",
                l.boxes[a].0 + l.boxes[a].2,
                l.boxes[a].1 + l.boxes[a].3 / 2,
                l.boxes[a].1,
                l.boxes[b].1 + l.boxes[b].3,
                l.boxes[b].0 + l.boxes[b].2,
                l.boxes[b].1 + l.boxes[b].3 / 2
            )
        } else if let Some(detour) = detour {
            let bend = l.boxes[a].1 + l.boxes[a].3 + 2 * detour;
            format!(
                "M {} {} C {} {bend} {} {bend} {} {}",
                l.boxes[a].0 + l.boxes[a].2 / 2,
                l.boxes[a].1 + l.boxes[a].3,
                l.boxes[a].0,
                l.boxes[b].0 + l.boxes[b].2,
                l.boxes[b].0 + l.boxes[b].2 / 2,
                l.boxes[b].1 + l.boxes[b].3
            )
        } else {
            format!("M {x1} {y1} L {x2} {y2}")
        };
        out += &format!("<path d=\"{path}\" fill=\"none\" stroke=\"#333\" stroke-width=\"1.5\" marker-end=\"url(#arrow)\"/>\n");
    }
    for (n, &(x, y, w, h)) in g.nodes.iter().zip(&l.boxes) {
        out += &format!(
            "<rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" rx=\"6\" fill=\"{}\" stroke=\"#333\"/>\n",
            fill(n.frozen).1
        );
        for (k, line) in n.lines.iter().enumerate() {
            out += &format!(
                "<text x=\"{}\" y=\"{}\" font-family=\"monospace\" font-size=\"13\">{}</text>\n",
                x + PAD,
                y + PAD + 10 + k as i64 * LINE_H,
                escape(line)
            );
        }
    }
    out + "</svg>\n"
}

/// A PNG picture, written atomically to `path`.
pub fn to_png(model: &Sequential, options: &PlotOptions, path: &Path) -> Result<()> {
    let g = graph(model, options);
    let l = layout(&g, options.rankdir, 1);
    let vertical = matches!(options.rankdir, RankDir::TB | RankDir::BT);
    let mut canvas = Canvas::new(l.width as u32, l.height as u32);
    for (&(a, b), detour) in g.edges.iter().zip(&l.detours) {
        let ((x1, y1), (x2, y2)) = anchors(&l, a, b, vertical);
        if let Some(detour) = detour {
            // Skip edge: out to the side, along, and back in.
            let (ax, ay, aw, ah) = l.boxes[a];
            let (bx, by, bw, bh) = l.boxes[b];
            let points = if vertical {
                let side = (ax + aw + detour) as f64;
                [
                    ((ax + aw) as f64, (ay + ah / 2) as f64),
                    (side, (ay + ah / 2) as f64),
                    (side, (by + bh / 2) as f64),
                    ((bx + bw) as f64, (by + bh / 2) as f64),
                ]
            } else {
                let side = (ay + ah + detour) as f64;
                [
                    ((ax + aw / 2) as f64, (ay + ah) as f64),
                    ((ax + aw / 2) as f64, side),
                    ((bx + bw / 2) as f64, side),
                    ((bx + bw / 2) as f64, (by + bh) as f64),
                ]
            };
            for w in points.windows(2) {
                canvas.line(w[0], w[1], BLACK);
            }
            let (ex, ey) = points[3];
            canvas.rect(ex as i64 - 3, ey as i64 - 3, 6, 6, BLACK);
        } else {
            canvas.line((x1 as f64, y1 as f64), (x2 as f64, y2 as f64), BLACK);
            canvas.rect(x2 - 3, y2 - 3, 6, 6, BLACK);
        }
    }
    for (n, &(x, y, w, h)) in g.nodes.iter().zip(&l.boxes) {
        canvas.rect(x, y, w, h, BLACK);
        canvas.rect(x + 1, y + 1, w - 2, h - 2, fill(n.frozen).0);
        for (k, line) in n.lines.iter().enumerate() {
            canvas.text(x + PAD, y + PAD + k as i64 * LINE_H, line, 1, BLACK);
        }
    }
    canvas.save(path)
}

/// Write the plot in the format the file extension names (`.dot`, `.svg`, `.png`).
pub fn plot_model(model: &Sequential, options: &PlotOptions, path: &Path) -> Result<()> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("dot") => crate::io::write_atomic(path, to_dot(model, options).as_bytes()),
        Some("svg") => crate::io::write_atomic(path, to_svg(model, options).as_bytes()),
        Some("png") => to_png(model, options, path),
        _ => Err(Error::Invalid(format!(
            "'{}': the plot file must end in .svg, .png or .dot",
            path.display()
        ))),
    }
}
