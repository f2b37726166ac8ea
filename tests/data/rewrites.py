# Every planner rewrite in one model (the Keras text of tests/test_equiv.c's rewrite_model):
# C3 + C4 + F3 (Conv(relu) -> MaxPool -> Dropout), C1 + F1 + F3 (BN -> MaxPool -> ReLU ->
# SpatialDropout), C2 + F1 + F2 (BN -> SpatialDropout -> ReLU), C2 + F1 (BN -> Dropout -> ReLU).
# bench/bench_bits.c trains it planned and unplanned (tools/bitcheck.sh).
from keras.models import Sequential
from keras.layers import (Conv2D, MaxPooling2D, Dropout, SpatialDropout2D, BatchNormalization,
                          Activation, Flatten, Dense)

model = Sequential()
model.add(Conv2D(6, (3, 3), padding='same', activation='relu', input_shape=(12, 12, 3)))
model.add(MaxPooling2D(pool_size=(2, 2)))
model.add(Dropout(0.3))
model.add(Conv2D(8, (3, 3), padding='same'))
model.add(BatchNormalization())
model.add(MaxPooling2D(pool_size=(2, 2)))
model.add(Activation('relu'))
model.add(SpatialDropout2D(0.25))
model.add(Conv2D(8, (3, 3), padding='same'))
model.add(BatchNormalization())
model.add(SpatialDropout2D(0.5))
model.add(Activation('relu'))
model.add(Conv2D(4, (1, 1)))
model.add(BatchNormalization())
model.add(Dropout(0.2))
model.add(Activation('relu'))
model.add(Flatten())
model.add(Dense(5, activation='softmax'))

model.compile(loss='sparse_categorical_crossentropy', optimizer='adam', metrics=['accuracy'])
