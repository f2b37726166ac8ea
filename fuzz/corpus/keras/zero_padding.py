from keras import layers, models
model = models.Sequential()
model.add(layers.Conv2D(4, (3, 3), activation='relu', input_shape=(8, 8, 1)))
model.add(layers.ZeroPadding2D(padding=((1, 0), (2, 3))))
model.add(layers.ZeroPadding2D(2))
model.add(layers.ZeroPadding2D())
model.add(layers.ZeroPadding2D((1,2)))
model.add(layers.Flatten())
model.add(layers.Dense(10, activation='softmax'))
