# The order the asker of Stack Overflow q/59634780 proposed for each block:
# Conv - SpatialDropout - BatchNormalization - Activation - MaxPool.
# `cnnkit check examples/asker_proposal.py` reports the variance shift (CK001).
from keras.models import Sequential
from keras.layers import Conv2D, SpatialDropout2D, BatchNormalization, Activation, MaxPooling2D
from keras.layers import Flatten, Dense

model = Sequential()
model.add(Conv2D(32,(3,3), input_shape=(28,28,1)))
model.add(SpatialDropout2D(0.2))
model.add(BatchNormalization())
model.add(Activation('relu'))
model.add(MaxPooling2D(pool_size=(2,2)))

model.add(Conv2D(64,(3,3)))
model.add(SpatialDropout2D(0.2))
model.add(BatchNormalization())
model.add(Activation('relu'))
model.add(MaxPooling2D(pool_size=(2,2)))

model.add(Flatten())
model.add(Dense(10))
model.add(Activation('softmax'))

model.compile(loss='sparse_categorical_crossentropy', optimizer='adam', metrics=['accuracy'])
