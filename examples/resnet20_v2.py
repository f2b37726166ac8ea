# ResNet-20 v2 (He et al. 2016, "Identity Mappings in Deep Residual Networks", arXiv:1603.05027,
# Fig. 4(e): full pre-activation) for 28x28x1 Fashion-MNIST, in the Keras functional style.
# Pre-activation blocks: BN-ReLU-Conv-BN-ReLU-Conv, Add with the shortcut, no ReLU after the Add.
# One Conv2D as the stem (its BN-ReLU is the first block's) and a final BN-ReLU before global
# average pooling and Dense(10). Three stages of 16, 32 and 64 filters with 3 blocks each; the
# first block of stages 2 and 3 halves the feature map with stride 2 and meets the shortcut
# through a 1x1 projection with stride 2. The projection reads the block's BN-ReLU'd input, as
# He's pre-activation code (resnet-1k-layers: one BN-ReLU shared by both paths of a unit that
# changes dimensions) and Keras's ResNetV2 (applications/resnet_v2.py, block2: the conv shortcut
# reads `preact`) do, so every path into an Add starts from a normalized tensor; identity
# shortcuts read the raw sum. (The old Keras CIFAR-10 example's v2 feeds the projection the raw
# sum instead; the parameter count is the same either way.) 274,154 parameters (1,376 of them BN
# moving statistics), the same as v1: the 19 BN layers only move. The worked count is in
# tests/test_graph.c. Written out flat, to read as a table (cnnkit also runs functions and loops).
import keras
from keras import layers

inputs = keras.Input(shape=(28, 28, 1))
x = layers.Conv2D(16, 3, padding="same")(inputs)

# stage 1, block 1: 16 filters
y = layers.BatchNormalization()(x)
y = layers.Activation("relu")(y)
y = layers.Conv2D(16, 3, padding="same")(y)
y = layers.BatchNormalization()(y)
y = layers.Activation("relu")(y)
y = layers.Conv2D(16, 3, padding="same")(y)
x = layers.Add()([y, x])

# stage 1, block 2: 16 filters
y = layers.BatchNormalization()(x)
y = layers.Activation("relu")(y)
y = layers.Conv2D(16, 3, padding="same")(y)
y = layers.BatchNormalization()(y)
y = layers.Activation("relu")(y)
y = layers.Conv2D(16, 3, padding="same")(y)
x = layers.Add()([y, x])

# stage 1, block 3: 16 filters
y = layers.BatchNormalization()(x)
y = layers.Activation("relu")(y)
y = layers.Conv2D(16, 3, padding="same")(y)
y = layers.BatchNormalization()(y)
y = layers.Activation("relu")(y)
y = layers.Conv2D(16, 3, padding="same")(y)
x = layers.Add()([y, x])

# stage 2, block 1: 32 filters, stride 2 and a projection shortcut from the BN-ReLU'd input
p = layers.BatchNormalization()(x)
p = layers.Activation("relu")(p)
y = layers.Conv2D(32, 3, strides=2, padding="same")(p)
y = layers.BatchNormalization()(y)
y = layers.Activation("relu")(y)
y = layers.Conv2D(32, 3, padding="same")(y)
shortcut = layers.Conv2D(32, 1, strides=2)(p)
x = layers.Add()([y, shortcut])

# stage 2, block 2: 32 filters
y = layers.BatchNormalization()(x)
y = layers.Activation("relu")(y)
y = layers.Conv2D(32, 3, padding="same")(y)
y = layers.BatchNormalization()(y)
y = layers.Activation("relu")(y)
y = layers.Conv2D(32, 3, padding="same")(y)
x = layers.Add()([y, x])

# stage 2, block 3: 32 filters
y = layers.BatchNormalization()(x)
y = layers.Activation("relu")(y)
y = layers.Conv2D(32, 3, padding="same")(y)
y = layers.BatchNormalization()(y)
y = layers.Activation("relu")(y)
y = layers.Conv2D(32, 3, padding="same")(y)
x = layers.Add()([y, x])

# stage 3, block 1: 64 filters, stride 2 and a projection shortcut from the BN-ReLU'd input
p = layers.BatchNormalization()(x)
p = layers.Activation("relu")(p)
y = layers.Conv2D(64, 3, strides=2, padding="same")(p)
y = layers.BatchNormalization()(y)
y = layers.Activation("relu")(y)
y = layers.Conv2D(64, 3, padding="same")(y)
shortcut = layers.Conv2D(64, 1, strides=2)(p)
x = layers.Add()([y, shortcut])

# stage 3, block 2: 64 filters
y = layers.BatchNormalization()(x)
y = layers.Activation("relu")(y)
y = layers.Conv2D(64, 3, padding="same")(y)
y = layers.BatchNormalization()(y)
y = layers.Activation("relu")(y)
y = layers.Conv2D(64, 3, padding="same")(y)
x = layers.Add()([y, x])

# stage 3, block 3: 64 filters
y = layers.BatchNormalization()(x)
y = layers.Activation("relu")(y)
y = layers.Conv2D(64, 3, padding="same")(y)
y = layers.BatchNormalization()(y)
y = layers.Activation("relu")(y)
y = layers.Conv2D(64, 3, padding="same")(y)
x = layers.Add()([y, x])

x = layers.BatchNormalization()(x)
x = layers.Activation("relu")(x)
x = layers.GlobalAveragePooling2D()(x)
outputs = layers.Dense(10, activation="softmax")(x)
model = keras.Model(inputs=inputs, outputs=outputs, name="resnet20_v2")
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
