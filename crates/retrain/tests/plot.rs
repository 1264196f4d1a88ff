//! plot_model: DOT, SVG and PNG of the layer graph.

use retrain::model::{plot_model, to_dot, to_svg, PlotOptions, RankDir};
use retrain::zoo::{self, ZooOptions};

#[test]
fn vgg16_plots_as_a_chain_of_23_boxes() {
    let model = zoo::vgg::vgg16(&ZooOptions::default()).unwrap();
    let options = PlotOptions {
        rankdir: RankDir::BT,
        show_shapes: true,
        ..PlotOptions::default()
    };
    let dot = to_dot(&model, &options);
    assert!(dot.contains("rankdir=BT"));
    assert_eq!(
        dot.matches(" -> ").count(),
        22,
        "input + 22 layers in a chain"
    );
    assert!(
        dot.contains("block4_pool (MaxPooling2D)\\n(None, 14, 14, 512)"),
        "{dot}"
    );
    let svg = to_svg(&model, &options);
    assert_eq!(svg.matches("<rect x=").count(), 23);
    assert_eq!(svg.matches("marker-end").count(), 22);
    let dir = std::env::temp_dir().join(format!("retrain-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("vgg16.png");
    plot_model(&model, &options, &png).unwrap();
    let img = image::open(&png).unwrap();
    assert!(
        img.height() > 20 * img.width() / 10,
        "a tall chain: {}x{}",
        img.width(),
        img.height()
    );
    let err = plot_model(&model, &options, &dir.join("vgg16.jpg"))
        .unwrap_err()
        .to_string();
    assert!(err.contains(".svg, .png or .dot"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn expanded_efficientnet_shows_residual_adds_and_frozen_layers() {
    let model = (zoo::entry("efficientnet_lite0").unwrap().build)(&ZooOptions::default()).unwrap();
    retrain::layers::Layer::set_trainable(&model, false);
    let options = PlotOptions {
        expand_nested: true,
        show_trainable: true,
        ..PlotOptions::default()
    };
    let dot = to_dot(&model, &options);
    // Lite0 has 9 blocks with a skip connection (stride 1, same width): 2b 3b 4b 4c 5b 5c 6b 6c 6d.
    assert_eq!(dot.matches("_add (Add)").count(), 9);
    assert!(dot.contains("block2b_add (Add)") && !dot.contains("block2a_add"));
    assert!(dot.contains("trainable: N") && dot.contains("#d7d7d7"));
    let nodes = dot.matches("[label=").count();
    let edges = dot.matches(" -> ").count();
    assert_eq!(
        edges,
        nodes - 1 + 9,
        "a chain plus one skip edge per residual block"
    );
}

#[test]
fn a_graph_model_plots_every_edge_of_its_wiring() {
    use retrain::layers::{ActivationKind, Dense, LayerRef, Merge};
    use retrain::model::{input, Apply, Sequential};
    use retrain::Shape;
    use std::sync::Arc;
    let x = input(Shape::Vector(8));
    let hidden: LayerRef = Arc::new(Dense::with_name("hidden", 8, ActivationKind::Relu));
    let skip: LayerRef = Arc::new(Merge::add(Some("skip".into())));
    let h = hidden.apply(&x).unwrap();
    let s = skip.apply_to(&[&x, &h]).unwrap();
    let model = Sequential::functional(Some("residual"), &x, &s).unwrap();
    let dot = to_dot(&model, &PlotOptions::default());
    assert_eq!(dot.matches(" -> ").count(), 3, "{dot}");
    assert!(
        dot.contains("n0 -> n1") && dot.contains("n0 -> n2") && dot.contains("n1 -> n2"),
        "{dot}"
    );
    assert!(dot.contains("skip (Add)"), "{dot}");
}
