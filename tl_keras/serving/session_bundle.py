"""A SavedModel loaded as TF Serving loads it: its `serve` MetaGraph in a
graph and session of its own (TF1 and TF2 SavedModels alike, `ParseExample`
graphs included), every signature run by feeding and fetching the tensors
its `SignatureDef` names. As in TF Serving, a fed tensor's shape is not
checked against the signature's declared shape: a placeholder takes what
the graph's ops accept (`x` of shape `[1]` for a signature declared
`[-1, 1]`)."""

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2


class SessionSignature:
    """One signature of a `SessionBundle`: `input_specs` (`{name:
    TensorSpec}` as declared), `output_names`, and a call with numpy inputs
    that returns `{output name: numpy array}`.

    Example:
    >>> bundle.signatures["serving_default"](text=np.array([b"great phone"], object))
    {'label': array([b'pos'], dtype=object), ...}
    """

    def __init__(self, session, signature_def):
        self.input_specs = {name: tf.TensorSpec(tf.TensorShape(info.tensor_shape), tf.as_dtype(info.dtype), name)
                            for name, info in sorted(signature_def.inputs.items())}
        self.output_names = sorted(signature_def.outputs)
        options = config_pb2.CallableOptions(feed=[signature_def.inputs[name].name for name in self.input_specs],
                                             fetch=[signature_def.outputs[name].name for name in self.output_names])
        # The callable TF Serving's C++ session runs: `Session.run` and
        # `make_callable` check a fed shape against the placeholder's in
        # Python, which TF Serving never does.
        self._run = session._make_callable_from_options(options)

    def __call__(self, **inputs):
        values = [inputs[name] for name in self.input_specs]
        return dict(zip(self.output_names, self._run(*values)))


class SessionBundle:
    """The `serve` MetaGraph of a SavedModel folder in its own session;
    `signatures` maps each signature name (not the internal
    `__saved_model_init_op`) to a `SessionSignature`.

    Args:
        folder: a SavedModel folder (`saved_model.pb`, `variables/`).

    Example:
    >>> bundle = SessionBundle("exports/reviews/1")
    >>> sorted(bundle.signatures)
    ['serving_default']
    """

    def __init__(self, folder):
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        logger, level = tf.get_logger(), tf.get_logger().level
        logger.setLevel("ERROR")  # The TF1 loader's deprecation notice: this is the loader TF Serving uses.
        try:
            with self.graph.as_default():
                meta_graph = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], str(folder))
        finally:
            logger.setLevel(level)
        self.signatures = {name: SessionSignature(self.session, definition)
                           for name, definition in sorted(meta_graph.signature_def.items())
                           if not name.startswith("__")}


def as_feed(value, spec):
    """A request's value as the numpy array fed for `spec`'s dtype; raises
    `TypeError`/`ValueError` when it cannot be one."""
    if spec.dtype == tf.string:
        array = np.asarray(value, dtype=object)
        if array.size and not all(isinstance(item, (bytes, str)) for item in array.reshape(-1)):
            raise TypeError(f"{array.dtype} values are not strings")
        return array
    return tf.convert_to_tensor(value, dtype=spec.dtype).numpy()
