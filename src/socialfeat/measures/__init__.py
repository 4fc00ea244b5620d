"""How the stages measure a feature source on cold items: a floor below evaluate, content, selection and live.

- :mod:`~socialfeat.measures.coldstart`: the cold-start data, ridge maps from features to factors, users ranked;
- :mod:`~socialfeat.measures.metrics`: pure ranking metrics, the standardizer, the ridge path, the λ choice;
- :mod:`~socialfeat.measures.bootstrap`: paired bootstrap intervals over the same sampled users and test items.

These helpers live here, not in ``evaluate/``, because several stages need them and no stage imports another.
"""
