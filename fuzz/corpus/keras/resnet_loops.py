import keras
from keras import layers

def block(x, filters, first_of_stage):
    strides = 2 if first_of_stage else 1
    y = layers.Conv2D(filters, 3, strides=strides, padding='same')(x)
    y = layers.BatchNormalization()(y)
    y = layers.Activation('relu')(y)
    y = layers.Conv2D(filters, 3, padding='same')(y)
    y = layers.BatchNormalization()(y)
    if strides != 1 or not first_of_stage is False:
        x = layers.Conv2D(filters, 1, strides=strides)(x) if strides > 1 else x
    x = layers.Add()([y, x])
    return layers.Activation('relu')(x)

def resnet(input_shape, depth=20, num_classes=10, *, name='resnet20_v1'):
    n = (depth - 2) // 6
    inputs = keras.Input(shape=input_shape)
    x = layers.Conv2D(16, 3, padding='same')(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Activation('relu')(x)
    for stage, filters in enumerate([16, 32, 64, 128]):
        if filters > 64:
            break
        for i in range(n):
            x = block(x, filters, stage > 0 and i == 0)
    else:
        x = layers.Dense(1)(x)  # not run: the loop left by break
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes, activation='softmax')(x)
    return keras.Model(inputs=inputs, outputs=outputs, name=name)

model = resnet((28,) * 1 + (28, 1))
model.compile(optimizer='adam', loss='sparse_categorical_crossentropy')
