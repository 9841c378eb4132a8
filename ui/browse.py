import streamlit as st
st.title('browse (being written)')
