//! The seed Keras tutorial, step by step, in retrain's library API.
//!
//! Run: `cargo run --release --example seed`

use retrain::layers::{
    Batch, BatchNorm, Context, Dense, GlobalAveragePooling2d, Layer, LayerRef, Preprocess,
    PreprocessMode,
};
use retrain::model::{summary, Sequential, SummaryOptions};
use retrain::zoo::{vgg, ZooOptions};
use retrain::{default_device, Shape, Tensor};
use std::sync::Arc;

fn names(vars: &[retrain::variable::Variable]) -> Vec<String> {
    vars.iter().map(|v| format!("{v:?}")).collect()
}

fn main() -> retrain::Result<()> {
    let device = default_device();
    let trainable_column = SummaryOptions {
        show_trainable: true,
        ..SummaryOptions::default()
    };

    // 1. VGG16 with its ImageNet classifier.
    let vgg16 = vgg::vgg16(&ZooOptions::default())?;
    print!("{}", summary(&vgg16, SummaryOptions::default()));

    // 2. Reuse its layers in a new Sequential (shared, not copied), freeze them, replace the
    //    1000-way classifier with Dense(5).
    let mut model = Sequential::from_layers(None, vgg16.layers())?;
    model.pop();
    for layer in model.layers() {
        layer.set_trainable(false);
    }
    model.add(Arc::new(Dense::new(5)))?;
    print!("{}", summary(&model, trainable_column));

    // 3. VGG16 without its top accepts any image size; add pooling and a new head, with the
    //    preprocessing inside the model as its first layer.
    let base = vgg::vgg16(&ZooOptions {
        include_top: false,
        ..ZooOptions::default()
    })?;
    base.set_trainable(false);
    let mut classifier = Sequential::new(None);
    let layers: Vec<LayerRef> = vec![
        Arc::new(Preprocess::new(None, PreprocessMode::Caffe)),
        Arc::new(base),
        Arc::new(GlobalAveragePooling2d::new(None)),
        Arc::new(Dense::new(5)),
    ];
    for layer in layers {
        classifier.add(layer)?;
    }
    for size in [96, 128] {
        let images = Tensor::<4>::full([2, 3, size, size], 127.0, &device);
        let out = classifier.predict(images)?;
        println!("{size}x{size} images -> output {:?}", out.dims());
    }
    classifier.build(Shape::image(Some(224), Some(224), 3))?;
    print!("{}", summary(&classifier, trainable_column));

    // 4. A Dense layer has no weights until it sees its first input.
    let dense = Dense::new(5);
    println!("before build: {:?}", names(&dense.variables()));
    let x = Batch::Vectors(Tensor::<2>::ones([1, 2], &device));
    dense.call(x, &mut Context::inference(&device))?;
    println!(
        "after call: {:?} trainable: {}",
        names(&dense.variables()),
        dense.trainable_variables().len()
    );

    // 5. BatchNormalization: gamma/beta train, moving statistics never do; freezing it moves
    //    gamma/beta to the non-trainable list too (and runs it in inference mode).
    let bn = BatchNorm::new(None);
    bn.build(Shape::Vector(4))?;
    println!("bn weights: {:?}", names(&bn.variables()));
    println!(
        "bn trainable: {:?} non-trainable: {:?}",
        names(&bn.trainable_variables()),
        names(&bn.non_trainable_variables())
    );
    bn.set_trainable(false);
    println!(
        "bn.trainable=False -> trainable: {:?} non-trainable: {:?}",
        names(&bn.trainable_variables()),
        names(&bn.non_trainable_variables())
    );
    Ok(())
}
