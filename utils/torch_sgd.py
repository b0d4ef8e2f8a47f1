"""SGD with PyTorch's momentum form and coupled L2 weight decay, as the original trains (torch.optim.SGD).

Per variable w with gradient g: ``d = g + wd·w``; ``buf = μ·buf + d`` (``buf = d`` on the first step, which is
the same since buf starts at 0); ``w -= lr·buf``. Keras' SGD keeps ``v = μ·v − lr·g`` instead, which differs
whenever lr changes (warmup, steps); see shared/docs/yolact_reference.md §1.5. Decay hits every trainable
variable (conv biases, BN gamma/beta too), as the original passes all ``net.parameters()``.

Skipping: the original skips ``optimizer.step()`` when the loss is not finite. Set :attr:`TorchSGD.apply_update`
(a bool variable) to False before ``apply_gradients`` and neither weights nor momentum buffers change (the
iteration counter still advances, as the original's ``iteration``).
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="yolact")
class TorchSGD(keras.optimizers.Optimizer):
    """``torch.optim.SGD(momentum=μ, weight_decay=wd, dampening=0, nesterov=False)`` as a Keras 3 optimizer.

    Args:
      learning_rate: float or a LearningRateSchedule (e.g. utils.lr_schedule.YolactLRSchedule) of
        ``self.iterations``.
      momentum: μ (0.9).
      l2_decay: coupled weight decay wd (5e-4), added to the gradient before momentum. Keras' own
        ``weight_decay`` (decoupled) is not used.
    """

    def __init__(self, learning_rate=1e-3, momentum=0.9, l2_decay=5e-4, name="torch_sgd", **kwargs):
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if float(l2_decay) < 0:
            raise ValueError(f"l2_decay must be >= 0, got {l2_decay}")
        self.momentum = float(momentum)
        self.l2_decay = float(l2_decay)
        with tf.init_scope():
            self.apply_update = tf.Variable(
                True, trainable=False, name="apply_update",
                synchronization=tf.VariableSynchronization.ON_WRITE,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")

    def update_step(self, gradient, variable, learning_rate):
        lr = tf.cast(learning_rate, variable.dtype)
        g = tf.cast(gradient, variable.dtype)
        buf = self.momentums[self._get_variable_index(variable)]
        d = g + self.l2_decay * variable
        new_buf = self.momentum * buf + d
        new_w = variable - lr * new_buf
        ok = tf.convert_to_tensor(self.apply_update)
        self.assign(buf, tf.where(ok, new_buf, buf))
        self.assign(variable, tf.where(ok, new_w, variable))

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "l2_decay": self.l2_decay})
        config.pop("weight_decay", None)
        return config


__all__ = ["TorchSGD"]
