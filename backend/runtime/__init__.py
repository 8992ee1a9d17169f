"""The run-time engine (`backend.runtime.engine.Engine`) and the rules it adds around the networks: the focus pass,
the pose prior, marks that hold, text grounding, the people finder and other people taken out. Serving and evaluation
import this package; it imports only the networks (`backend.dfimat`)."""
