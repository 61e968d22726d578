"""Step-wise stylisation with a trained policy: the step runners (:mod:`.runners`), ONNX export and runtime
(:mod:`.onnx`), the backend choice (:mod:`.backends`), models by name or file (:mod:`.models`; model files read
without unpickling: :mod:`.model_files`), pictures of a sequence (:mod:`.pictures`) and the CPU allocator setting
(:mod:`.allocator`)."""
