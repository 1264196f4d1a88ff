//! The functional API: layers applied to symbolic tensors, merges, graph models that run, save,
//! load and summarize like stacked ones.

mod common;

use burn::tensor::{Distribution, Tensor, TensorData};
use common::scratch_dir;
use retrain::layers::{
    ActivationKind, Batch, Context, Conv2d, Conv2dConfig, Dense, Layer, LayerRef, Merge, Padding,
};
use retrain::model::{input, load_model, save_model, summary, Apply, Sequential, SummaryOptions};
use retrain::zoo::{self, ZooOptions};
use retrain::{default_device, Shape};
use std::sync::Arc;

fn values(batch: Batch) -> Vec<f32> {
    let data = match batch {
        Batch::Maps(t) => t.into_data(),
        Batch::Vectors(t) => t.into_data(),
    };
    data.convert::<f32>().try_into_vec::<f32>().unwrap()
}

fn run(model: &Sequential, x: Batch) -> Vec<f32> {
    let mut ctx = Context::inference(&default_device());
    values(model.forward(x, &mut ctx).unwrap())
}

#[test]
fn vgg16_rebuilt_functionally_from_its_layers_matches_bit_for_bit() {
    let device = default_device();
    let vgg = (zoo::entry("vgg16").unwrap().build)(&ZooOptions {
        include_top: false,
        input: Some([64, 64]),
        ..ZooOptions::default()
    })
    .unwrap();
    vgg.initialize(3, &device);

    // The seed's idiom: input_ = Input(...); x = vgg.layers[1](input_); ...; Model(input_, x).
    let input_ = input(Shape::image(Some(64), Some(64), 3));
    let mut x = input_.clone();
    for layer in vgg.layers() {
        x = layer.apply(&x).unwrap();
    }
    let rebuilt = Sequential::functional(Some("rebuilt"), &input_, &x).unwrap();
    assert!(!rebuilt.is_graph(), "a chain stays a plain stack");
    assert_eq!(x.shape(), Shape::image(Some(2), Some(2), 512));
    assert_eq!(rebuilt.param_count(), 14_714_688);

    let images: Tensor<4> =
        Tensor::random([2, 3, 64, 64], Distribution::Uniform(0.0, 255.0), &device);
    let ours = run(&rebuilt, Batch::Maps(images.clone()));
    let zoo = run(&vgg, Batch::Maps(images));
    assert!(ours == zoo, "outputs differ");

    // Shared, not copied: freezing a layer of the zoo model freezes it in the rebuilt one.
    vgg.get_layer("block1_conv1").unwrap().set_trainable(false);
    assert!(!rebuilt.get_layer("block1_conv1").unwrap().trainable());
}

/// input(8) -> dense (relu) -> add(input, dense) -> predictions (3)
fn residual_model() -> Sequential {
    let x = input(Shape::Vector(8));
    let hidden: LayerRef = Arc::new(Dense::with_name("hidden", 8, ActivationKind::Relu));
    let add: LayerRef = Arc::new(Merge::add(Some("skip".into())));
    let head: LayerRef = Arc::new(Dense::with_name("predictions", 3, ActivationKind::Linear));
    let h = hidden.apply(&x).unwrap();
    let s = add.apply_to(&[&x, &h]).unwrap();
    let y = head.apply(&s).unwrap();
    let model = Sequential::functional(Some("residual"), &x, &y).unwrap();
    model.initialize(9, &default_device());
    model
}

#[test]
fn a_residual_graph_runs_its_skip_connection() {
    let device = default_device();
    let model = residual_model();
    assert!(model.is_graph());
    assert_eq!(model.param_count(), 8 * 8 + 8 + 8 * 3 + 3);
    let x: Tensor<2> = Tensor::random([4, 8], Distribution::Normal(0.0, 1.0), &device);
    let ours = run(&model, Batch::Vectors(x.clone()));

    // The same by hand: predictions(x + relu(hidden(x))).
    let mut ctx = Context::inference(&device);
    let hidden = model.get_layer("hidden").unwrap();
    let head = model.get_layer("predictions").unwrap();
    let h = hidden.forward(Batch::Vectors(x.clone()), &mut ctx).unwrap();
    let h = match h {
        Batch::Vectors(t) => t,
        _ => unreachable!(),
    };
    let manual = values(head.forward(Batch::Vectors(x + h), &mut ctx).unwrap());
    assert!(ours == manual);

    let text = summary(&model, SummaryOptions::default());
    assert!(text.contains("Connected to"), "{text}");
    assert!(
        text.contains("input_layer[0][0], hidden[0][0]"),
        "the Add row lists both inputs: {text}"
    );
    assert!(text.contains("Total params: 99"), "{text}");
}

#[test]
fn graph_models_save_and_load_with_their_wiring() {
    let device = default_device();
    let model = residual_model();
    let dir = scratch_dir("graph-save");
    save_model(
        &model,
        &dir,
        None,
        &["a".into(), "b".into(), "c".into()],
        &device,
    )
    .unwrap();
    let json = std::fs::read_to_string(dir.join("model.json")).unwrap();
    assert!(json.contains("\"inbound\""), "{json}");
    let (loaded, _) = load_model(&dir, &device).unwrap();
    assert!(loaded.is_graph());
    let x: Tensor<2> = Tensor::random([3, 8], Distribution::Normal(0.0, 1.0), &device);
    assert!(run(&model, Batch::Vectors(x.clone())) == run(&loaded, Batch::Vectors(x)));
}

#[test]
fn merges_infer_shapes_and_mismatches_name_both_layers() {
    let x = input(Shape::image(Some(16), Some(16), 3));
    let conv = |name: &str, filters: usize, stride: usize| -> LayerRef {
        Arc::new(Conv2d::from_config(
            Some(name.into()),
            Conv2dConfig::new(filters, 3)
                .strides(stride)
                .padding(Padding::Same),
        ))
    };
    let a = conv("branch_a", 4, 1).apply(&x).unwrap();
    let b = conv("branch_b", 6, 1).apply(&x).unwrap();
    let c = conv("branch_c", 4, 2).apply(&x).unwrap();
    let concat: LayerRef = Arc::new(Merge::concatenate(Some("mixed".into())));
    let mixed = concat.apply_to(&[&a, &b]).unwrap();
    assert_eq!(mixed.shape(), Shape::image(Some(16), Some(16), 10));

    // A (1, 1, 4) gate broadcasts over the spatial size, like squeeze-and-excitation.
    let pooled: LayerRef = Arc::new(retrain::layers::GlobalAveragePooling2d::new(None));
    let gate_vector = pooled.apply(&a).unwrap();
    assert_eq!(gate_vector.shape(), Shape::Vector(4));
    let multiply: LayerRef = Arc::new(Merge::multiply(None));
    assert!(multiply.apply_to(&[&a, &gate_vector]).is_err());

    let add: LayerRef = Arc::new(Merge::add(Some("bad_add".into())));
    let err = add.apply_to(&[&a, &c]).unwrap_err().to_string();
    assert!(
        err.contains("bad_add")
            && err.contains("'branch_a' (None, 16, 16, 4)")
            && err.contains("'branch_c' (None, 8, 8, 4)"),
        "{err}"
    );
    let model = Sequential::functional(Some("inception_like"), &x, &mixed).unwrap();
    let device = default_device();
    model.initialize(1, &device);
    let images: Tensor<4> = Tensor::from_data(
        TensorData::new(vec![0.5f32; 2 * 3 * 16 * 16], [2, 3, 16, 16]),
        &device,
    );
    let mut ctx = Context::inference(&device);
    let out = model.forward(Batch::Maps(images), &mut ctx).unwrap();
    assert_eq!(out.dims(), [2, 10, 16, 16]);
}

/// The body rows of a Keras-style summary table, each as trimmed cells (a cell Keras wraps
/// over several lines is joined with spaces), and the totals lines. Automatic pooling names
/// lose their counter suffix, which depends on what else the process built.
fn table(summary: &str) -> (Vec<Vec<String>>, Vec<String>) {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut continued = false;
    for line in summary.lines() {
        if !line.starts_with('│') {
            continued = false;
            continue;
        }
        let cells: Vec<String> = line
            .trim_matches('│')
            .split('│')
            .map(|c| c.trim().to_string())
            .collect();
        match rows.last_mut() {
            Some(row) if continued => {
                for (cell, more) in row.iter_mut().zip(cells) {
                    if !more.is_empty() {
                        cell.push(' ');
                        cell.push_str(&more);
                    }
                }
            }
            _ => rows.push(cells),
        }
        continued = true;
    }
    for row in &mut rows {
        for cell in row.iter_mut() {
            if let Some(rest) = cell.strip_prefix("global_average_pooling2d_") {
                let digits = rest.chars().take_while(char::is_ascii_digit).count();
                *cell = format!("global_average_pooling2d{}", &rest[digits..]);
            }
        }
    }
    let totals = summary
        .lines()
        .filter(|l| l.contains(" params: "))
        .map(|l| l.trim().to_string())
        .collect();
    (rows, totals)
}

fn keras_summary(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/keras")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn summaries_agree_with_keras_row_for_row() {
    // Written by tools/keras_functional_summaries.py with Keras 3.
    let vgg = (zoo::entry("vgg16").unwrap().build)(&ZooOptions {
        include_top: false,
        input: Some([224, 224]),
        ..ZooOptions::default()
    })
    .unwrap();
    let input_ = input(Shape::image(Some(224), Some(224), 3));
    let mut x = input_.clone();
    for layer in vgg.layers() {
        x = layer.apply(&x).unwrap();
    }
    let rebuilt = Sequential::functional(Some("rebuilt"), &input_, &x).unwrap();
    for (ours, keras) in [
        (
            summary(&rebuilt, SummaryOptions::default()),
            keras_summary("vgg16_functional.txt"),
        ),
        (
            summary(&residual_model(), SummaryOptions::default()),
            keras_summary("residual.txt"),
        ),
        (
            summary(
                &zoo::resnet::resnet50(&ZooOptions::default()).unwrap(),
                SummaryOptions::default(),
            ),
            keras_summary("resnet50.txt"),
        ),
        (
            summary(
                &zoo::mobilenet_v2::mobilenet_v2(1.0, &ZooOptions::default()).unwrap(),
                SummaryOptions::default(),
            ),
            keras_summary("mobilenet_v2.txt"),
        ),
        (
            summary(
                &zoo::inception_v3::inception_v3(&ZooOptions::default()).unwrap(),
                SummaryOptions::default(),
            ),
            keras_summary("inception_v3.txt"),
        ),
    ] {
        let (our_rows, our_totals) = table(&ours);
        let (keras_rows, keras_totals) = table(&keras);
        let first_difference = our_rows.iter().zip(&keras_rows).position(|(a, b)| a != b);
        assert!(
            first_difference.is_none() && our_rows.len() == keras_rows.len(),
            "row {first_difference:?} of {} / {}: ours {:?}, Keras {:?}",
            our_rows.len(),
            keras_rows.len(),
            first_difference.map(|i| &our_rows[i]),
            first_difference.map(|i| &keras_rows[i])
        );
        assert_eq!(our_totals, keras_totals);
    }
}

#[test]
fn layers_inside_efficientnet_blocks_are_outputs_and_fine_tuning_points() {
    let device = default_device();
    let lite0 = (zoo::entry("efficientnet_lite0").unwrap().build)(&ZooOptions {
        include_top: false,
        input: Some([64, 64]),
        ..ZooOptions::default()
    })
    .unwrap();
    lite0.initialize(5, &device);
    let names = [
        "block6a_expand_conv",
        "block2b_add",
        "block2b",
        "block6a_project_bn",
        "block6a",
        "top_activation",
    ];
    let extractor = lite0.feature_extractor(&names).unwrap();
    let shapes: Vec<String> = extractor
        .output_shapes()
        .iter()
        .map(|s| s.unwrap().to_string())
        .collect();
    assert_eq!(
        shapes,
        [
            "(None, 4, 4, 672)",
            "(None, 16, 16, 24)",
            "(None, 16, 16, 24)",
            "(None, 2, 2, 192)",
            "(None, 2, 2, 192)",
            "(None, 2, 2, 1280)"
        ]
    );
    let images: Tensor<4> =
        Tensor::random([2, 3, 64, 64], Distribution::Uniform(0.0, 255.0), &device);
    let outputs: Vec<Vec<f32>> = extractor
        .run(
            Batch::Maps(images.clone()),
            &mut Context::inference(&device),
        )
        .unwrap()
        .into_iter()
        .map(values)
        .collect();
    assert!(outputs[1] == outputs[2], "a residual block outputs its add");
    assert!(
        outputs[3] == outputs[4],
        "a strided block ends at its project BN"
    );
    assert!(
        outputs[5] == run(&lite0, Batch::Maps(images)),
        "the last layer is the model output"
    );

    // Fine-tuning from a layer inside a block unfreezes the rest of that block and what follows.
    lite0.set_trainable(false);
    let first = retrain::train::head::unfreeze(
        &lite0,
        &retrain::train::head::Unfreeze::From("block6a_bn".into()),
        false,
    )
    .unwrap();
    assert_eq!(first, "block6a_bn");
    let block = lite0.get_layer("block6a").unwrap();
    let trainable: Vec<String> = block
        .trainable_variables()
        .iter()
        .map(|v| v.path().to_string())
        .collect();
    assert!(
        trainable[0] == "block6a_bn/gamma" && !trainable.iter().any(|p| p.contains("dwconv")),
        "{trainable:?}"
    );
    assert!(lite0
        .get_layer("block5c")
        .unwrap()
        .trainable_variables()
        .is_empty());
}
