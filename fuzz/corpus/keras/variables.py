img_rows, img_cols = 28, 28
input_shape = (img_rows, img_cols, 1)
num_classes = 10
lr = 0.002
opt = SGD(lr=lr / 2, momentum=0.9, nesterov=True)
model = Sequential()
model.add(Conv2D(2 ** 5, kernel_size=(3, 3), strides=(1, 1), padding='same', input_shape=input_shape))
model.add(MaxPooling2D((3, 3), None, 'same'))
model.add(Conv2D(32, (3, 5), (2, 1), 'same', use_bias=False))
model.add(Activation('leaky_relu'))
model.add(SpatialDropout2D(rate=0.1))
model.add(AveragePooling2D(pool_size=2))
model.add(GlobalAveragePooling2D())
model.add(Dropout(1 / 4))
model.add(Dense(num_classes * 2 - 1, activation="elu"))
model.add(BatchNormalization(momentum=0.9, epsilon=1e-5))
model.add(Dense(num_classes, activation='softmax'))
model.compile(opt, 'sparse_categorical_crossentropy', ['acc'])
